from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtml.shared.contracts import (
    MAX_MESSAGE_BYTES,
    PREDICT_CHAIN,
    REGISTRY,
    UNPACK_LIMITS,
    FeatureVector,
    Message,
    Prediction,
    PredictRequest,
    Reward,
    decode,
    encode,
    unpack,
)
from rtml.shared.errors import ContractError
from rtml.shared.tasks.registry import tasks

from rtml.tasks.eta.events import OrderPlaced
from tests.abuse.frames import EXAMPLES, hostile_frames, message_like_maps, msgpack_values

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)

order_placed = st.builds(
    OrderPlaced,
    ts=times,
    order_id=names,
    restaurant_id=names,
    zone_id=names,
    distance_km=st.floats(min_value=0, max_value=500),
    n_items=st.integers(min_value=1, max_value=1000),
)


@st.composite
def predictions(draw: st.DrawFn) -> Prediction:
    width = draw(st.integers(min_value=0, max_value=8))
    floats = st.floats(allow_nan=False, allow_infinity=False)
    features = FeatureVector(
        feature_set="eta@1",
        names=draw(st.lists(names, min_size=width, max_size=width)),
        values=draw(st.lists(floats, min_size=width, max_size=width)),
        freshness_s=draw(st.lists(st.none() | times, min_size=width, max_size=width)),
        defaulted=draw(st.lists(st.booleans(), min_size=width, max_size=width)),
    )
    return Prediction(
        ts=draw(times),
        task=draw(st.sampled_from(["eta", "recs"])),
        request_ts=draw(times),
        features=features,
        model_version=draw(names),
        propensity=draw(st.floats(min_value=1e-6, max_value=1)),
        prediction=draw(floats),
    )


@given(order_placed)
def test_event_round_trip(event: OrderPlaced) -> None:
    assert decode(encode(event)) == event


@given(predictions())
def test_prediction_round_trip(prediction: Prediction) -> None:
    assert decode(encode(prediction)) == prediction


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        decode(data)
    except ContractError:
        pass


def wire(**changes: object) -> bytes:
    body = OrderPlaced(
        ts=1.0, order_id="o", restaurant_id="r", zone_id="z", distance_km=1.0, n_items=1
    ).to_wire()
    body.update(changes)
    return msgpack.packb({k: v for k, v in body.items() if v is not None})


def test_rtmls_messages_and_the_loaded_tasks_events_are_known_by_schema() -> None:
    assert set(REGISTRY) == {k.SCHEMA for k in PREDICT_CHAIN} and len(REGISTRY) == 11
    assert set(tasks().event_schemas) == {
        "order_placed", "order_ready", "courier_assigned", "order_picked_up", "order_delivered",
        "courier_online", "courier_offline", "impression", "item_viewed", "item_clicked",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"n_items": 0}, "n_items", "greater than or equal to 1"),
        ({"distance_km": "far"}, "distance_km", "valid number"),
        ({"ts": -5.0}, "ts", "non-negative"),
        ({"restaurant_id": None}, "restaurant_id", "Field required"),
        ({"schema": "order_teleported"}, "schema", "unknown schema"),
        ({"version": "2.0"}, "version", "major version 2 is not supported"),
        ({"version": "one"}, "version", "MAJOR.MINOR"),
    ],
)
def test_invalid_messages_name_the_field_and_reason(changes, field, reason) -> None:
    with pytest.raises(ContractError) as caught:
        decode(wire(**changes))
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_a_task_no_loaded_task_has_is_a_contract_error_naming_the_known_ones() -> None:
    # a consumer dead-letters a ContractError with its reason (reason "schema" on rtml.dlq)
    body = Reward(ts=1.0, task="recs", arm="3", reward=1.0).to_wire()
    assert decode(msgpack.packb(body)).task == "recs"  # type: ignore[attr-defined]
    with pytest.raises(ContractError) as error:
        decode(msgpack.packb({**body, "task": "fraud"}))
    assert error.value.field == "task"
    assert "unknown task 'fraud'; known tasks: eta, recs" in error.value.reason


def test_newer_minor_version_with_unknown_fields_decodes() -> None:
    event = decode(wire(version="1.9", surge_pricing=True))
    assert isinstance(event, OrderPlaced) and event.n_items == 1


def test_decode_can_narrow_the_accepted_kinds() -> None:
    with pytest.raises(ContractError, match="not accepted here"):
        decode(wire(), PredictRequest)


def test_undecodable_and_oversized_input_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="not decodable"):
        decode(b"\xc1")
    with pytest.raises(ContractError, match="exceeds"):
        decode(b"\x00" * ((1 << 20) + 1))
    with pytest.raises(ContractError, match="expected a map"):
        decode(msgpack.packb([1, 2]))


def test_feature_vector_columns_must_match_names() -> None:
    with pytest.raises(ValueError, match="2 entries for 1 feature names"):
        FeatureVector(
            feature_set="x@1", names=["a"], values=[1.0, 2.0], freshness_s=[None], defaulted=[False]
        )


def test_message_key_is_its_entity() -> None:
    event = OrderPlaced(
        ts=1.0, order_id="o", restaurant_id="r7", zone_id="z", distance_km=1.0, n_items=1
    )
    assert event.key == b"r7"


def test_a_field_may_not_shadow_the_envelope() -> None:
    with pytest.raises(TypeError, match="version"):

        class Clashing(OrderPlaced):
            version: str = "v1"


# --- fuzzing: decode answers anything with a message or a ContractError -------------

# a modest default (tests/abuse runs the heavy setting); RTML_ABUSE_EXAMPLES raises it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(data: bytes | None) -> None:
    try:
        assert isinstance(decode(data), Message)
    except ContractError as exc:
        assert str(exc)


@given(msgpack_values)
@FUZZ
def test_any_msgpack_value_decodes_or_is_a_contract_error(value: object) -> None:
    decodes_or_refuses(msgpack.packb(value, use_bin_type=True))


@given(message_like_maps())
@FUZZ
def test_maps_naming_a_real_schema_decode_or_are_a_contract_error(body: dict) -> None:
    decodes_or_refuses(msgpack.packb(body, use_bin_type=True))


@pytest.mark.parametrize(
    ("name", "frame"), list(hostile_frames(PredictRequest(ts=1.0, task="eta")).items())
)
def test_every_hostile_frame_is_a_contract_error(name: str, frame: bytes | None) -> None:
    with pytest.raises(ContractError):
        decode(frame)


def test_unpacking_is_bounded() -> None:
    # the limits DESIGN.md asks for: every collection and string length capped,
    # map keys only strings, no extension types
    for limit in ("max_str_len", "max_bin_len", "max_array_len", "max_map_len", "max_ext_len"):
        assert UNPACK_LIMITS[limit] <= MAX_MESSAGE_BYTES
    with pytest.raises(ContractError, match="not allowed for map key"):
        unpack(msgpack.packb({1: "one"}))
