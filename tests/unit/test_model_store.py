"""Model store: immutable versions, lineage, champion pointer, registration hooks, code version,
on a local directory and on a real S3 API (moto's server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from rtml.shared.build import read_git_commit
from rtml.shared.errors import (
    ChampionChanged,
    IntegrityError,
    ModelStoreError,
    UnknownVersion,
    UnsafeModelError,
    VersionExists,
)
from rtml.shared.model_blobs import Blobs, blobs_at
from rtml.shared.model_store import ModelRecord, ModelStore

FEATURES = np.random.default_rng(7).random((64, 3), dtype=np.float32)
DATA_RANGE = {"topic": "rtml.training.examples", "partitions": {"0": [0, 64]}}
PARAMS = {"max_depth": 2, "eta": 0.3, "nthread": 1}


def train(rounds: int = 3) -> xgb.Booster:
    labels = FEATURES @ np.array([1.0, 2.0, 3.0], dtype=np.float32)
    return xgb.train(PARAMS, xgb.DMatrix(FEATURES, labels), num_boost_round=rounds)


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    return train()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    if request.param == "local":
        return ModelStore(tmp_path / "models")
    return ModelStore(request.getfixturevalue("s3").new_prefix("models"))


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


def raw(store: ModelStore) -> Blobs:
    """The store's objects as they are, without its checks: what an intruder writes to."""
    return blobs_at(store.location)


def artifact_key(version: str) -> str:
    return f"versions/{version}/model.ubj"


def record_key(version: str) -> str:
    return f"versions/{version}/record.json"


def read_artifact(store: ModelStore, version: str) -> bytes:
    return raw(store).get(artifact_key(version))


def write_artifact(store: ModelStore, version: str, data: bytes) -> None:
    raw(store).put(artifact_key(version), data)


def forge_artifact(store: ModelStore, version: str, data: bytes) -> None:
    """Replace the artifact *and* its recorded hash, as someone with write access could."""
    write_artifact(store, version, data)
    record = json.loads(raw(store).get(record_key(version)))
    record["sha256"] = hashlib.sha256(data).hexdigest()
    raw(store).put(record_key(version), json.dumps(record).encode())


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
    artifact = read_artifact(store, record.version)
    assert record.sha256 == hashlib.sha256(artifact).hexdigest()
    assert artifact.startswith(b"{L")  # UBJSON, not JSON


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


# --- integrity of records and version ids ---------------------------------------------


def test_a_record_describing_another_version_is_refused(
    store: ModelStore, booster: xgb.Booster
) -> None:
    first = register(store, booster)
    second = register(store, booster)
    raw(store).put(record_key(second.version), first.model_dump_json().encode())

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
    assert raw(store).folders("") == []
    assert store.list() == []


def test_a_tampered_object_is_refused_on_every_load(
    store: ModelStore, booster: xgb.Booster
) -> None:
    version = register(store, booster).version
    artifact = read_artifact(store, version)
    write_artifact(store, version, artifact[:-8] + b"tampered")
    with pytest.raises(IntegrityError, match="sha256"):
        store.load(version)

    # an intruder who also re-signs the record still cannot make the store unpickle
    forge_artifact(store, version, b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")
    with pytest.raises(UnsafeModelError, match="pickle"):
        store.load(version)


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
    assert raw(store).folders("versions") == ["eta-fixed-id"]


def test_losing_a_registration_race_is_refused_and_leaves_the_winner_intact(
    store: ModelStore, booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner_booster = train(rounds=5)
    put = store._blobs.put

    # both saw the id free; the winner commits while the loser is about to write
    def lose_the_race(key: str, data: bytes, **condition: Any) -> None:
        if key == artifact_key("eta-raced") and not raw(store).exists(record_key("eta-raced")):
            monkeypatch.setattr(store._blobs, "put", put)
            register(store, winner_booster, version="eta-raced")
        put(key, data, **condition)

    monkeypatch.setattr(store._blobs, "put", lose_the_race)

    with pytest.raises(VersionExists, match="eta-raced"):
        register(store, booster, version="eta-raced")

    loaded, _ = store.load("eta-raced")
    np.testing.assert_array_equal(predict(loaded), predict(winner_booster))


def test_concurrent_registrations_of_one_id_have_exactly_one_winner(
    store: ModelStore, booster: xgb.Booster
) -> None:
    contenders = [train(rounds=rounds) for rounds in range(2, 8)]
    start = threading.Barrier(len(contenders))
    outcomes: dict[int, str] = {}

    def contend(index: int) -> None:
        start.wait()
        try:
            register(store, contenders[index], version="eta-contested")
            outcomes[index] = "won"
        except VersionExists:
            outcomes[index] = "refused"

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(contenders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [index for index, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and len(outcomes) == len(contenders), outcomes
    loaded, record = store.load("eta-contested")
    np.testing.assert_array_equal(predict(loaded), predict(contenders[winners[0]]))
    assert record.sha256 == hashlib.sha256(read_artifact(store, "eta-contested")).hexdigest()


# a registration that dies (SIGKILL) between writing the artifact and the record
_CRASHING_REGISTRATION = """
import sys, time
import numpy, xgboost
from rtml.shared.model_store import ModelStore

store = ModelStore(sys.argv[1], mirror=None)
put = store._blobs.put

def put_then_hang(key, data, **condition):
    put(key, data, **condition)
    if key.endswith("/model.ubj"):
        print("artifact written", flush=True)
        time.sleep(600)

store._blobs.put = put_then_hang
features = numpy.random.default_rng(7).random((64, 3), dtype=numpy.float32)
booster = xgboost.train({"nthread": 1}, xgboost.DMatrix(features, features.sum(axis=1)), 2)
store.register(booster, task="eta", version="eta-crashed", feature_set="eta@1",
               data_range={}, params={}, metrics={})
"""


def test_a_crash_in_the_middle_of_a_registration_leaves_no_half_version(
    store: ModelStore, booster: xgb.Booster
) -> None:
    existing = register(store, booster)
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_REGISTRATION, str(store)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "artifact written\n"
    finally:
        child.kill()
        child.wait()

    assert raw(store).exists(artifact_key("eta-crashed"))  # the crash left its artifact...
    assert store.list() == [existing]  # ...which no reader takes for a version
    with pytest.raises(UnknownVersion):
        store.load("eta-crashed")
    with pytest.raises(VersionExists):  # and the id stays spent: versions are immutable
        register(store, booster, version="eta-crashed")
    after = register(store, booster)
    assert store.list() == [existing, after]


# --- concurrent readers ---------------------------------------------------------------------


def test_a_registration_in_progress_is_invisible_to_readers(
    store: ModelStore, booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = register(store, booster)
    artifact_written = threading.Event()
    release = threading.Event()
    put = store._blobs.put

    def pausing_put(key: str, data: bytes, **condition: Any) -> None:
        put(key, data, **condition)
        if key == artifact_key("eta-new"):
            artifact_written.set()
            release.wait()

    monkeypatch.setattr(store._blobs, "put", pausing_put)
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

    assert ModelStore(str(store)).champion("eta") == second
    assert store.champion("recs") is None
    pointer = json.loads(raw(store).get("champions/eta.json"))
    assert pointer["version"] == second.version


def test_the_champion_moves_only_from_the_version_the_caller_saw(
    store: ModelStore, booster: xgb.Booster
) -> None:
    first, second, third = (register(store, booster) for _ in range(3))

    assert store.set_champion("eta", first.version, replacing=None) == first
    with pytest.raises(ChampionChanged, match=f"is {first.version}, not None"):
        store.set_champion("eta", second.version, replacing=None)
    store.set_champion("eta", second.version, replacing=first.version)
    with pytest.raises(ChampionChanged):
        store.set_champion("eta", third.version, replacing=first.version)

    assert store.champion("eta") == second


@pytest.mark.parametrize("first_seen", ["none", "a champion"])
def test_of_two_writers_that_saw_the_same_champion_exactly_one_wins(
    store: ModelStore, booster: xgb.Booster, first_seen: str
) -> None:
    rounds = 12
    writers = 2
    candidates = [[register(store, booster) for _ in range(rounds)] for _ in range(writers)]
    if first_seen == "a champion":
        store.set_champion("eta", register(store, booster).version)
    start = threading.Barrier(writers)
    wins: list[list[str]] = [[] for _ in range(rounds)]

    def writer(index: int) -> None:
        for round_ in range(rounds):
            seen = store.champion("eta")
            start.wait()  # both have read the same pointer before either writes
            try:
                version = candidates[index][round_].version
                store.set_champion("eta", version, replacing=seen.version if seen else None)
                wins[round_].append(version)
            except ChampionChanged:
                pass
            start.wait()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [len(won) for won in wins] == [1] * rounds, wins
    assert store.champion("eta").version == wins[-1][0]


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
    assert str(ModelStore()) == str(tmp_path / "elsewhere")
    monkeypatch.setenv("RTML_MODEL_STORE", "s3://a-bucket/some/prefix/")
    assert str(ModelStore()) == "s3://a-bucket/some/prefix"
    monkeypatch.delenv("RTML_MODEL_STORE")
    assert str(ModelStore()) == ".rtml/models"


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
