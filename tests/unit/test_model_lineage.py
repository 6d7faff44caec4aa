"""Lineage rendering: the tree ``rtml models lineage`` prints."""

from __future__ import annotations

from pathlib import Path

import pytest
import xgboost as xgb
from rtml.shared.model_lineage import render_lineage_tree
from rtml.shared.model_store import ModelStore

from tests.unit.test_model_store import register, train


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    return train()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


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
