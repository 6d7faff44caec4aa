from __future__ import annotations

import random

import numpy as np
import pytest
from rtml.services.collector.join import JoinConfig, JoinState
from rtml.shared.contracts import FeatureVector, Prediction

from rtml.tasks.eta.events import OrderDelivered, OrderReady
from rtml.tasks.recs.events import ItemClicked
from tests import binary_task

T0 = 1_717_412_400.0
FEATURES = FeatureVector(
    feature_set="eta@1", names=["distance_km"], values=[2.0], freshness_s=[None], defaulted=[False]
)


def state(**config: object) -> JoinState:
    return JoinState(JoinConfig(**config), {}, {}, {})  # type: ignore[arg-type]


def eta_prediction(
    order: str, ts: float, predicted: float = 30.0, request_id: str | None = None
) -> Prediction:
    return Prediction(
        id=request_id or f"req-{order}", ts=ts, task="eta", entities={"order_id": order},
        request_ts=ts,
        features=FEATURES, model_version="v1", arm="v1", propensity=0.5, prediction=predicted,
    )  # fmt: skip


def delivered(
    order: str, placed: float, minutes: float, event_id: str | None = None
) -> OrderDelivered:
    return OrderDelivered(
        id=event_id or f"ev-{order}", ts=placed + minutes * 60, order_id=order, courier_id="c",
        restaurant_id="r", zone_id="z", placed_ts=placed,
    )  # fmt: skip


def feed(join: JoinState, messages) -> list:
    out = []
    for message in messages:
        handler = join.on_prediction if isinstance(message, Prediction) else join.on_label
        out.extend(handler(message))
    return out


@pytest.mark.parametrize("prediction_first", [True, False])
def test_eta_joins_in_either_order_with_label_and_reward(prediction_first: bool) -> None:
    pair = [eta_prediction("o1", T0, predicted=28.0), delivered("o1", T0, minutes=31.0)]
    [joined] = feed(state(), pair if prediction_first else pair[::-1])
    assert joined.example.id == "req-o1" and joined.example.label == pytest.approx(31.0)
    assert joined.example.features == FEATURES and joined.example.propensity == 0.5
    assert (joined.reward.arm, joined.reward.reward) == ("v1", 1.0)  # within 5 minutes


def test_reward_is_zero_beyond_the_tolerance() -> None:
    # the eta task's reward: within 5 minutes of the delivery
    [joined] = feed(state(), [eta_prediction("o1", T0, 28.0), delivered("o1", T0, 33.5)])
    assert joined.reward.reward == 0.0


def test_every_prediction_yields_one_example_whatever_the_order_and_repeats() -> None:
    rng = random.Random(4)
    orders = [f"o{i}" for i in range(300)]
    messages = [eta_prediction(o, T0 + i * 10) for i, o in enumerate(orders)]
    messages += [delivered(o, T0 + i * 10, minutes=20 + i % 30) for i, o in enumerate(orders)]
    messages += rng.sample(messages, 100)  # redeliveries
    rng.shuffle(messages)
    joined = feed(state(window_s=10 * 3600), messages)
    assert sorted(j.example.id for j in joined) == sorted(f"req-{o}" for o in orders)


def test_windows_close_in_event_time() -> None:
    join = state(window_s=3600)
    assert (
        feed(join, [eta_prediction("lonely", T0), delivered("orphan", T0 - 50 * 60, minutes=60)])
        == []
    )
    # a label for "lonely" after its window closed joins nothing
    assert (
        feed(join, [eta_prediction("later", T0 + 7300), delivered("lonely", T0, minutes=125)]) == []
    )
    assert join.counts["prediction_expired_unlabelled"] == 1
    assert join.counts["label_without_prediction"] == 1
    assert "eta:lonely" in join.done


def test_recs_click_within_attribution_is_reward_1_and_silence_is_0() -> None:
    def recommend(session: str, item: int, ts: float) -> Prediction:
        return Prediction(
            id=f"req-{session}", ts=ts, task="recs", entities={"session_id": session},
            request_ts=ts,
            features=FEATURES, model_version="v1", arm=str(item), propensity=0.1, prediction=0.3,
        )  # fmt: skip

    join = state(label_windows={"recs": 600})
    clicked = feed(
        join, [recommend("s1", 7, T0), ItemClicked(ts=T0 + 60, session_id="s1", item_id=7)]
    )
    assert [(j.example.label, j.reward.reward, j.reward.arm) for j in clicked] == [(1.0, 1.0, "7")]
    feed(join, [recommend("s2", 3, T0)])
    closed = feed(join, [recommend("s3", 1, T0 + 700)])
    assert [(j.example.id, j.reward.reward) for j in closed] == [("req-s2", 0.0)]
    # a recs reward carries the features its item was chosen with (contextual routing
    # learns from them); an eta reward does not need them
    assert [j.reward.features for j in clicked + closed] == [FEATURES, FEATURES]
    (eta,) = feed(state(), [eta_prediction("o1", T0), delivered("o1", T0, 30.0)])
    assert eta.reward.features is None


def test_state_rebuilt_from_its_stores_continues_the_join() -> None:
    predictions, labels, done = {}, {}, {}
    first = JoinState(JoinConfig(), predictions, labels, done)
    feed(first, [eta_prediction("o1", T0), delivered("o2", T0, 10)])
    restarted = JoinState(JoinConfig(), predictions, labels, done)
    joined = feed(restarted, [delivered("o1", T0, 25), eta_prediction("o2", T0 + 1)])
    assert sorted(j.example.id for j in joined) == ["req-o1", "req-o2"]
    assert restarted.watermark >= T0 + 600


def test_forget_done_keeps_recent_keys() -> None:
    join = state(window_s=100)
    for i in range(5):
        feed(join, [eta_prediction(f"o{i}", T0 + i * 1000), delivered(f"o{i}", T0 + i * 1000, 1)])
    assert join.forget_done() == 4 and set(join.done) == {"eta:o4"}  # horizon: two windows back


def test_a_probability_reaches_the_example_and_the_reward_as_predicted() -> None:
    with binary_task.loaded() as spec:
        vector = binary_task.feature_vector(np.array([3.0, 12.0, 9.0]))
        prediction = Prediction(
            id="req-o7", ts=T0, task=spec.name, entities={"restaurant_id": "r", "order_id": "o7"},
            request_ts=T0, features=vector, model_version="b1", prediction=0.83,
        )  # fmt: skip
        ready = OrderReady(id="ev-o7", ts=T0 + 25 * 60, order_id="o7", restaurant_id="r",
                           placed_ts=T0)  # fmt: skip
        [joined] = feed(state(), [prediction, ready])
    assert (joined.example.prediction, joined.example.label) == (0.83, 1.0)
    assert joined.reward.reward == pytest.approx(spec.label.reward(0.83, 1.0)) == 0.83
