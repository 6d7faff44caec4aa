"""Model store: immutable versions, lineage, integrity and refusal of unsafe artifacts."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from shared import model_store
from shared.errors import (
    IntegrityError,
    ModelStoreError,
    UnknownVersion,
    UnsafeModelError,
    VersionExists,
)
from shared.model_store import (
    ModelRecord,
    ModelStore,
    read_git_commit,
    render_lineage_tree,
)

FEATURES = np.random.default_rng(7).random((64, 3), dtype=np.float32)
DATA_RANGE = {"topic": "rtml.training.examples", "partitions": {"0": [0, 64]}}
PARAMS = {"max_depth": 2, "eta": 0.3, "nthread": 1}


def train(rounds: int = 3) -> xgb.Booster:
    labels = FEATURES @ np.array([1.0, 2.0, 3.0], dtype=np.float32)
    return xgb.train(PARAMS, xgb.DMatrix(FEATURES, labels), num_boost_round=rounds)


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    return train()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def xgboost_must_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to hand the artifact to XGBoost fails the test."""

    def refuse(self: xgb.Booster, fname: Any) -> None:
        raise AssertionError("the artifact reached XGBoost")

    monkeypatch.setattr(xgb.Booster, "load_model", refuse)


def register(
    store: ModelStore, booster: xgb.Booster, parent: ModelRecord | None = None, **overrides: Any
) -> ModelRecord:
    fields: dict[str, Any] = dict(
        task="eta",
        feature_set="eta@1",
        data_range=DATA_RANGE,
        params=PARAMS,
        metrics={"rmse": 1.5},
        parent_version=parent.version if parent else None,
    )
    return store.register(booster, **(fields | overrides))


def predict(booster: xgb.Booster) -> np.ndarray:
    return booster.inplace_predict(FEATURES)


def artifact_path(store: ModelStore, version: str) -> Path:
    return store.root / "versions" / version / "model.ubj"


def forge_artifact(store: ModelStore, version: str, data: bytes) -> None:
    """Replace the artifact *and* its recorded hash, as someone with write access could."""
    artifact_path(store, version).write_bytes(data)
    record_path = store.root / "versions" / version / "record.json"
    record = json.loads(record_path.read_text())
    record["sha256"] = hashlib.sha256(data).hexdigest()
    record_path.write_text(json.dumps(record))


# --- round trip -------------------------------------------------------------------


def test_round_trip_gives_equal_predictions_and_the_full_record(
    store: ModelStore, booster: xgb.Booster
) -> None:
    registered = register(store, booster, metrics={"rmse": 1.5, "mae": 1.1})

    loaded, record = store.load(registered.version)

    np.testing.assert_array_equal(predict(loaded), predict(booster))
    assert record == registered == store.record(registered.version)
    assert re.fullmatch(r"eta-\d{8}T\d{6}Z-[0-9a-f]{6}", record.version)
    assert record.parent_version is None
    assert (record.task, record.feature_set) == ("eta", "eta@1")
    assert record.data_range == DATA_RANGE
    assert record.params == PARAMS
    assert record.metrics == {"rmse": 1.5, "mae": 1.1}
    assert record.code_version.rtml == metadata.version("rtml")
    assert record.created_at.utcoffset() is not None
    artifact = artifact_path(store, record.version).read_bytes()
    assert record.sha256 == hashlib.sha256(artifact).hexdigest()
    assert artifact.startswith(b"{L")  # UBJSON, not JSON


def test_a_json_model_artifact_is_accepted(store: ModelStore, booster: xgb.Booster) -> None:
    registered = register(store, booster)
    forge_artifact(store, registered.version, bytes(booster.save_raw(raw_format="json")))

    loaded, _ = store.load(registered.version)

    np.testing.assert_array_equal(predict(loaded), predict(booster))


def test_records_that_are_not_plain_json_are_refused(
    store: ModelStore, booster: xgb.Booster
) -> None:
    with pytest.raises(ModelStoreError, match="data_range"):
        register(store, booster, data_range={"since": object()})
    with pytest.raises(ModelStoreError, match="rmse"):
        register(store, booster, metrics={"rmse": float("nan")})
    assert store.list() == []


def test_unknown_task_is_refused(store: ModelStore, booster: xgb.Booster) -> None:
    with pytest.raises(ModelStoreError, match="unknown task 'fraud'"):
        register(store, booster, task="fraud")


# --- lineage ------------------------------------------------------------------------


def test_lineage_of_three_versions_newest_first(store: ModelStore, booster: xgb.Booster) -> None:
    scratch = register(store, booster)
    tuned = register(store, booster, parent=scratch)
    retuned = register(store, booster, parent=tuned)

    assert [r.version for r in store.lineage(retuned.version)] == [
        retuned.version,
        tuned.version,
        scratch.version,
    ]
    assert store.lineage(scratch.version) == [scratch]
    assert store.list("eta") == [scratch, tuned, retuned]
    assert store.latest("eta") == retuned
    assert store.latest("recs") is None


def test_parent_must_exist_and_share_the_task(store: ModelStore, booster: xgb.Booster) -> None:
    with pytest.raises(UnknownVersion):
        register(store, booster, parent_version="eta-20260101T000000Z-000000")
    recs_model = register(store, booster, task="recs", feature_set="recs@1")
    with pytest.raises(ModelStoreError, match="recs model"):
        register(store, booster, parent=recs_model)
    assert store.list() == [recs_model]


def test_lineage_tree_shows_ancestry_and_descendants_only(
    store: ModelStore, booster: xgb.Booster
) -> None:
    root = register(store, booster)
    middle = register(store, booster, parent=root)
    register(store, booster, parent=root, version="eta-sibling-of-middle")
    first_child = register(store, booster, parent=middle)
    second_child = register(store, booster, parent=middle, metrics={"rmse": 1.25})
    store.set_champion("eta", first_child.version)

    lines = render_lineage_tree(store, middle.version).splitlines()

    assert lines == [
        f"{root.version}  eta@1  rmse=1.5",
        f"└── {middle.version}  eta@1  rmse=1.5 ◀",
        f"    ├── {first_child.version}  eta@1  rmse=1.5 [champion]",
        f"    └── {second_child.version}  eta@1  rmse=1.25",
    ]


# --- integrity and unsafe artifacts ---------------------------------------------------


@pytest.mark.usefixtures("xgboost_must_not_parse")
def test_a_flipped_byte_is_detected_before_xgboost_reads_it(
    store: ModelStore, booster: xgb.Booster
) -> None:
    version = register(store, booster).version
    path = artifact_path(store, version)
    artifact = bytearray(path.read_bytes())
    artifact[len(artifact) // 2] ^= 0x01
    path.write_bytes(bytes(artifact))

    with pytest.raises(IntegrityError, match="sha256"):
        store.load(version)


# written by hand: this suite never imports pickle
PICKLE_PROTOCOL_4 = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
PICKLE_PROTOCOL_2 = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."
PICKLE_PROTOCOL_0 = b"cos\nsystem\n(S'echo owned'\ntR."


@pytest.mark.usefixtures("xgboost_must_not_parse")
@pytest.mark.parametrize(
    ("artifact", "named_as"),
    [
        (PICKLE_PROTOCOL_4, "pickle \\(protocol 4\\)"),
        (PICKLE_PROTOCOL_2, "pickle \\(protocol 2\\)"),
        (PICKLE_PROTOCOL_0, "not XGBoost UBJSON/JSON"),
        (b"\x78\x5e" + b"\x00" * 16, "zlib data, as joblib"),  # joblib.dump(compress=3)
        (b"\x1f\x8b\x08\x00" + b"\x00" * 16, "gzip data, as joblib"),
        (b"\xfd7zXZ\x00" + b"\x00" * 16, "xz data, as joblib"),
        (b"ZF0x00000000000000a0" + b"\x78\x9c", "joblib zlib archive"),
        (b"PK\x03\x04" + b"\x00" * 16, "zip archive"),
        (b"", "not XGBoost UBJSON/JSON"),
        (b"{not a model", "not XGBoost UBJSON/JSON"),
    ],
    ids=[
        "pickle-4",
        "pickle-2",
        "pickle-0",
        "joblib-zlib",
        "joblib-gzip",
        "joblib-xz",
        "joblib-legacy",
        "zip",
        "empty",
        "brace-garbage",
    ],
)
def test_non_xgboost_artifacts_are_refused_even_with_a_matching_hash(
    store: ModelStore, booster: xgb.Booster, artifact: bytes, named_as: str
) -> None:
    version = register(store, booster).version
    forge_artifact(store, version, artifact)

    with pytest.raises(UnsafeModelError, match=named_as) as refusal:
        store.load(version)
    assert "never unpickles" in str(refusal.value)


def out_of_range_node(booster: xgb.Booster) -> bytes:
    """``booster`` as JSON with a child index pointing far past its tree's nodes."""
    document = json.loads(bytes(booster.save_raw(raw_format="json")))
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["left_children"][0] = 10**6
    return json.dumps(document).encode()


def test_a_tampered_model_with_a_resigned_hash_is_caught_in_a_child_process(
    store: ModelStore, booster: xgb.Booster
) -> None:
    version = register(store, booster).version
    forge_artifact(store, version, out_of_range_node(booster))

    # in this process, scoring it would be a segmentation fault
    with pytest.raises(IntegrityError, match="XGBoost crashed with SIGSEGV") as refusal:
        store.load(version, probe_in_child=True)
    assert "not loaded" in str(refusal.value)


def test_an_artifact_xgboost_refuses_fails_the_probe_with_its_error(
    store: ModelStore, booster: xgb.Booster
) -> None:
    version = register(store, booster).version
    forge_artifact(store, version, b'{"learner": {}}')

    with pytest.raises(IntegrityError, match=r"XGBoost failed \(exit 1: .+\)"):
        store.load(version, probe_in_child=True)


def test_a_sound_model_passes_the_probe_and_loads(store: ModelStore, booster: xgb.Booster) -> None:
    version = register(store, booster).version
    loaded, _ = store.load(version, probe_in_child=True)
    assert np.allclose(loaded.inplace_predict(FEATURES), booster.inplace_predict(FEATURES))


def test_a_record_describing_another_version_is_refused(
    store: ModelStore, booster: xgb.Booster
) -> None:
    first = register(store, booster)
    second = register(store, booster)
    (store.root / "versions" / second.version / "record.json").write_text(first.model_dump_json())

    with pytest.raises(IntegrityError, match=f"describes {first.version}"):
        store.load(second.version)


@pytest.mark.parametrize("name", ["../../etc", "", ".hidden", "a/b"])
def test_version_ids_that_are_not_one_path_component_are_unknown(
    store: ModelStore, name: str
) -> None:
    with pytest.raises(UnknownVersion, match="not a valid version id"):
        store.record(name)


def test_a_version_id_that_escapes_the_store_is_refused_before_writing(
    store: ModelStore, booster: xgb.Booster
) -> None:
    with pytest.raises(ModelStoreError, match="version"):
        register(store, booster, version="../escaped")
    assert not (store.root / "escaped").exists()
    assert store.list() == []


def test_no_module_of_the_store_imports_pickle() -> None:
    source = Path(model_store.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+(c?pickle|joblib|dill|cloudpickle)\b", source, re.M)


# --- immutability -------------------------------------------------------------------------


def test_registering_an_existing_version_id_is_refused(
    store: ModelStore, booster: xgb.Booster
) -> None:
    original = register(store, booster, version="eta-fixed-id")

    with pytest.raises(VersionExists, match="eta-fixed-id"):
        register(store, train(rounds=5), version="eta-fixed-id")

    assert store.record("eta-fixed-id") == original
    loaded, _ = store.load("eta-fixed-id")
    np.testing.assert_array_equal(predict(loaded), predict(booster))
    assert list((store.root / ".staging").iterdir()) == []


def test_losing_a_registration_race_is_refused_and_leaves_no_staging(
    store: ModelStore, booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner_booster = train(rounds=5)
    write = model_store._write_durably

    # the winner commits the same id while the loser is still writing its staging copy
    def write_then_lose_race(path: Path, data: bytes) -> None:
        write(path, data)
        if path.name == "record.json" and not (store.root / "versions" / "eta-raced").exists():
            monkeypatch.setattr(model_store, "_write_durably", write)
            register(store, winner_booster, version="eta-raced")

    monkeypatch.setattr(model_store, "_write_durably", write_then_lose_race)

    with pytest.raises(VersionExists, match="eta-raced"):
        register(store, booster, version="eta-raced")

    loaded, _ = store.load("eta-raced")
    np.testing.assert_array_equal(predict(loaded), predict(winner_booster))
    assert list((store.root / ".staging").iterdir()) == []


# --- concurrent readers ---------------------------------------------------------------------


def test_a_registration_in_progress_is_invisible_to_readers(
    store: ModelStore, booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = register(store, booster)
    artifact_written = threading.Event()
    release = threading.Event()
    write = model_store._write_durably

    def pausing_write(path: Path, data: bytes) -> None:
        write(path, data)
        if path.name == "model.ubj":
            artifact_written.set()
            release.wait()

    monkeypatch.setattr(model_store, "_write_durably", pausing_write)
    writer = threading.Thread(target=register, args=(store, booster), kwargs={"version": "eta-new"})
    writer.start()
    try:
        assert artifact_written.wait(timeout=30)
        assert store.list() == [existing]
        with pytest.raises(UnknownVersion):
            store.load("eta-new")
    finally:
        release.set()
        writer.join()

    assert [r.version for r in store.list()] == [existing.version, "eta-new"]
    loaded, _ = store.load("eta-new")
    np.testing.assert_array_equal(predict(loaded), predict(booster))


def test_readers_never_observe_a_partial_version_while_another_thread_registers(
    store: ModelStore, booster: xgb.Booster
) -> None:
    registrations = 15
    done = threading.Event()
    failures: list[BaseException] = []
    expected = predict(booster)

    def writer() -> None:
        try:
            parent = None
            for _ in range(registrations):
                parent = register(store, booster, parent=parent)
        finally:
            done.set()

    def reader() -> None:
        seen = 0
        try:
            while not done.is_set():
                records = store.list("eta")
                assert len(records) >= seen  # versions never disappear
                seen = len(records)
                for record in records:
                    loaded, loaded_record = store.load(record.version)
                    assert loaded_record == record
                    np.testing.assert_array_equal(predict(loaded), expected)
                    assert store.lineage(record.version)[0] == record
        except BaseException as error:  # reported to the main thread below
            failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(store.lineage(store.latest("eta").version)) == registrations


# --- champion pointer -------------------------------------------------------------------------


def test_champion_pointer_follows_set_champion_and_persists(
    store: ModelStore, booster: xgb.Booster
) -> None:
    assert store.champion("eta") is None
    first = register(store, booster)
    second = register(store, booster, parent=first)

    assert store.set_champion("eta", first.version) == first
    assert store.champion("eta") == first
    store.set_champion("eta", second.version)

    assert ModelStore(store.root).champion("eta") == second
    assert store.champion("recs") is None
    pointer = json.loads((store.root / "champions" / "eta.json").read_text())
    assert pointer["version"] == second.version
    assert [p.name for p in (store.root / "champions").iterdir()] == ["eta.json"]


def test_champion_must_exist_and_belong_to_the_task(
    store: ModelStore, booster: xgb.Booster
) -> None:
    recs_model = register(store, booster, task="recs", feature_set="recs@1")

    with pytest.raises(UnknownVersion):
        store.set_champion("eta", "eta-20260101T000000Z-000000")
    with pytest.raises(ModelStoreError, match="not a eta model"):
        store.set_champion("eta", recs_model.version)
    assert store.champion("eta") is None


# --- announcement hook -------------------------------------------------------------------------


def test_on_registered_runs_once_the_version_is_loadable(
    store: ModelStore, booster: xgb.Booster
) -> None:
    announced: list[str] = []

    def announce(record: ModelRecord) -> None:
        store.load(record.version)
        announced.append(record.version)

    record = store.register(
        booster,
        task="eta",
        feature_set="eta@1",
        data_range=DATA_RANGE,
        params=PARAMS,
        metrics={},
        on_registered=announce,
    )

    assert announced == [record.version]


async def test_register_async_awaits_an_async_hook(store: ModelStore, booster: xgb.Booster) -> None:
    announced: list[ModelRecord] = []

    async def announce(record: ModelRecord) -> None:
        announced.append(record)

    record = await store.register_async(
        booster,
        task="eta",
        feature_set="eta@1",
        data_range=DATA_RANGE,
        params=PARAMS,
        metrics={},
        on_registered=announce,
    )

    assert announced == [record]
    assert store.record(record.version) == record


def test_sync_register_refuses_an_async_hook_instead_of_dropping_it(
    store: ModelStore, booster: xgb.Booster
) -> None:
    async def announce(record: ModelRecord) -> None:
        raise AssertionError("never awaited")

    with pytest.raises(TypeError, match="register_async"):
        store.register(
            booster,
            task="eta",
            feature_set="eta@1",
            data_range=DATA_RANGE,
            params=PARAMS,
            metrics={},
            on_registered=announce,
        )


# --- configuration and code version ---------------------------------------------------------------


def test_root_comes_from_the_environment_with_a_local_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RTML_MODEL_STORE", str(tmp_path / "elsewhere"))
    assert ModelStore().root == tmp_path / "elsewhere"
    monkeypatch.delenv("RTML_MODEL_STORE")
    assert ModelStore().root == Path(".rtml/models")


def test_commit_from_the_environment_is_recorded(
    store: ModelStore, booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTML_GIT_COMMIT", "a" * 40)
    assert register(store, booster).code_version.git_commit == "a" * 40


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _loose_ref(git: Path) -> None:
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "refs" / "heads" / "main").write_text(COMMIT + "\n")


def _packed_ref(git: Path) -> None:
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{COMMIT} refs/heads/main\n")


def _detached(git: Path) -> None:
    (git / "HEAD").write_text(COMMIT + "\n")


def _unborn_branch(git: Path) -> None:
    (git / "HEAD").write_text("ref: refs/heads/main\n")


def _no_head(git: Path) -> None:
    pass


@pytest.mark.parametrize(
    ("make_git", "expected"),
    [
        (_loose_ref, COMMIT),
        (_packed_ref, COMMIT),
        (_detached, COMMIT),
        (_unborn_branch, None),
        (_no_head, None),
    ],
)
def test_git_commit_is_read_from_dot_git_without_running_git(
    tmp_path: Path, make_git: Callable[[Path], None], expected: str | None
) -> None:
    (tmp_path / ".git").mkdir()
    make_git(tmp_path / ".git")
    nested = tmp_path / "shared"
    nested.mkdir()

    assert read_git_commit(nested) == expected


def test_git_commit_is_none_outside_a_checkout(tmp_path: Path) -> None:
    assert read_git_commit(tmp_path) is None
