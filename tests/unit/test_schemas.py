"""``rtml schemas export``: one valid JSON Schema per contract, each accepting what rtml
writes and refusing what its readers refuse; the index and the document name every
contract and topic."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator, ValidationError
from rtml.shared import topics
from rtml.shared.contracts import (
    REGISTRY,
    FeatureVector,
    Message,
    Prediction,
    Reward,
    from_wire,
)
from rtml.shared.errors import ContractError
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.tasks.registry import tasks

from rtml.cli import main
from rtml.schemas import contract_schema
from rtml.tasks.eta.events import OrderPlaced
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from tests.unit.test_features_state import session_log


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("schemas")
    result = CliRunner().invoke(main, ["schemas", "export", str(directory)])
    assert result.exit_code == 0, result.output
    events = len(tasks().events)
    assert result.output == f"wrote {events + len(REGISTRY) + 3} files to {directory}\n"
    return directory


def validator(exported: Path, kind: type[Message]) -> Draft202012Validator:
    return Draft202012Validator(json.loads((exported / f"{kind.SCHEMA}.json").read_text()))


def test_every_contract_has_a_valid_schema_and_a_topic(exported: Path) -> None:
    index = json.loads((exported / "contracts.json").read_text())["contracts"]
    events = {e.SCHEMA for e in tasks().events}
    assert {c["schema"] for c in index} == {*events, *REGISTRY, BatchFeatureRecord.SCHEMA}
    assert {c["topic"] for c in index if c["schema"] in events} == {topics.EVENTS.name}
    topic_names = {t.name for t in topics.ALL}
    for contract in index:
        schema = json.loads((exported / contract["json_schema"]).read_text())
        Draft202012Validator.check_schema(schema)
        assert contract["topic"] in topic_names
        assert contract["key_field"] in schema["properties"]
        assert {"schema", "id", "ts"} <= set(schema["required"])
    document = (exported / "wire-format.md").read_text()
    for name in [*topic_names, *(f"`{c['schema']}`" for c in index)]:
        assert name in document


def written_by_rtml() -> list[Message]:
    features = FeatureVector(
        feature_set="eta@1", names=["distance_km"], values=[3.0], freshness_s=[None],
        defaulted=[False],
    )  # fmt: skip
    prediction = Prediction(
        ts=1.0, task="eta", request_ts=1.0, features=features, model_version="v1", prediction=2.0
    )
    reward = Reward(id=prediction.id, ts=2.0, task="recs", arm="7", reward=1.0, features=features)
    simulated = list(simulate(SimConfig(seed=3, id_prefix="schemas"), 1800))
    return [*simulated, *session_log(seed=2, hours=0.2), prediction, reward]


def test_what_rtml_writes_validates_against_its_schema(exported: Path) -> None:
    messages = written_by_rtml()
    assert {type(m).__name__ for m in messages} >= {"OrderPlaced", "Impression", "PredictRequest"}
    for message in messages:
        validator(exported, type(message)).validate(message.to_wire())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"restaurant_id": None}, "restaurant_id"),
        ({"n_items": 0}, "n_items"),
        ({"ts": -1}, "ts"),
        ({"version": "2.0"}, "version"),
        ({"schema": "order_ready"}, "schema"),
    ],
)
def test_a_map_the_readers_refuse_the_schema_refuses(change: dict, field: str) -> None:
    wire = OrderPlaced(
        ts=time.time(), order_id="o", restaurant_id="r", zone_id="z", distance_km=1, n_items=1
    ).to_wire()
    broken = {k: v for k, v in {**wire, **change}.items() if v is not None}
    with pytest.raises(ContractError) as refused:
        from_wire(broken, OrderPlaced)
    assert refused.value.field == field
    with pytest.raises(ValidationError):
        Draft202012Validator(contract_schema(OrderPlaced)).validate(broken)
