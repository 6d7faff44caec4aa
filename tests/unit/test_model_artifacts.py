"""Artifact safety: non-XGBoost artifacts (pickles above all) refused before XGBoost
parses a byte, modified artifacts caught by their hash, tampered models caught by the
child-process probe."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from rtml.shared import model_artifacts, model_lineage, model_store
from rtml.shared.errors import IntegrityError, UnsafeModelError
from rtml.shared.model_store import ModelStore

from tests.unit.test_model_store import (
    FEATURES,
    forge_artifact,
    predict,
    read_artifact,
    register,
    train,
    write_artifact,
)


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


def test_a_json_model_artifact_is_accepted(store: ModelStore, booster: xgb.Booster) -> None:
    registered = register(store, booster)
    forge_artifact(store, registered.version, bytes(booster.save_raw(raw_format="json")))

    loaded, _ = store.load(registered.version)

    np.testing.assert_array_equal(predict(loaded), predict(booster))


@pytest.mark.usefixtures("xgboost_must_not_parse")
def test_a_flipped_byte_is_detected_before_xgboost_reads_it(
    store: ModelStore, booster: xgb.Booster
) -> None:
    version = register(store, booster).version
    artifact = bytearray(read_artifact(store, version))
    artifact[len(artifact) // 2] ^= 0x01
    write_artifact(store, version, bytes(artifact))

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


def test_no_module_of_the_store_imports_pickle() -> None:
    for module in (model_store, model_artifacts, model_lineage):
        source = Path(module.__file__).read_text()
        assert not re.search(
            r"^\s*(import|from)\s+(c?pickle|joblib|dill|cloudpickle)\b", source, re.M
        ), module.__name__
