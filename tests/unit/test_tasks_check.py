from __future__ import annotations

import dataclasses
import math

import pytest
from rtml.shared.tasks.check import check
from rtml.shared.tasks.spec import ARM, Entity, Feature, ItemArms, Model, RouterPolicy

from rtml.tasks.eta.events import CourierOnline, OrderDelivered
from rtml.tasks.eta.spec import TASK as ETA
from rtml.tasks.recs.events import ItemClicked
from rtml.tasks.recs.spec import TASK as RECS
from tests.binary_task import TASK as BINARY


def problems_of(spec: object) -> dict[str, str]:
    return {problem.where: problem.what for problem in check(spec)}


@pytest.mark.parametrize("spec", [ETA, RECS], ids=["eta", "recs"])
def test_rtmls_own_tasks_have_no_problem(spec: object) -> None:
    assert check(spec) == []


def test_something_other_than_a_spec_is_refused() -> None:
    assert problems_of("eta") == {"TASK": "is a str, not a TaskSpec"}


def test_a_name_that_cannot_name_a_setting_is_refused() -> None:
    assert "name" in problems_of(dataclasses.replace(ETA, name="Fraud-Score"))


def test_an_event_keyed_by_no_entity_of_the_task_is_named() -> None:
    spec = dataclasses.replace(ETA, entities=(Entity("restaurant", key="restaurant_id"),))
    problems = problems_of(spec)
    assert "zone_id" in problems["events[6]"]
    assert problems["features[7] (zone_couriers_idle).entity"].startswith("'zone' is none")


def test_an_entity_with_a_key_on_no_event_or_another_entitys_key_is_named() -> None:
    entities = (*ETA.entities, Entity("card", key="card_id"), Entity("kitchen", "restaurant_id"))
    problems = problems_of(dataclasses.replace(ETA, entities=entities))
    assert "'card_id' is a field of none" in problems["entities[2] (card).key"]
    assert problems["entities[3] (kitchen).key"] == "'restaurant_id' keys another entity"


def test_feature_problems_say_which_feature_and_which_field() -> None:
    features = list(ETA.features)
    features[5] = dataclasses.replace(features[5], window_s=None)
    features[8] = dataclasses.replace(features[8], default=math.nan, value=None)
    # delivered orders are keyed by zone: a restaurant's state never sees them
    features[9] = dataclasses.replace(features[9], events=(OrderDelivered,))
    features[4] = dataclasses.replace(features[4], span_key="courier_id")
    features.append(Feature("distance_km", "input"))
    features.append(Feature("week_of_year", "calendar"))
    features.append(Feature("restaurant_rating", "latest", entity="restaurant", rank=0))
    features.append(Feature("n_items_latest", "input", window_s=60.0))
    features.append(Feature("zone_busy", "custom", entity="zone"))
    features.append(Feature("zone_total_min", "batch", entity="zone", aggregate="median"))
    problems = problems_of(dataclasses.replace(ETA, features=tuple(features)))
    assert problems == {
        "features[4] (restaurant_active_orders).span_key": (
            "order_placed has no field 'courier_id'"
        ),
        "features[5] (restaurant_orders_10m).window_s": "a count needs a window > 0 seconds",
        "features[8] (zone_mean_delivery_min_30m).default": "nan is not finite",
        "features[8] (zone_mean_delivery_min_30m).value": "a mean needs a value(event) function",
        "features[9] (restaurant_mean_prep_min_60m).events[0]": (
            "order_delivered is keyed by 'zone_id', not the entity's 'restaurant_id': "
            "the entity's state never sees it"
        ),
        "features[13] (distance_km)": "declared twice",
        "features[14] (week_of_year)": "calendar features are hour_of_day, day_of_week",
        "features[15] (restaurant_rating).events": "names no event",
        "features[15] (restaurant_rating).value": "a latest needs a value(event) function",
        "features[15] (restaurant_rating).rank": "0 is not a rank >= 1",
        "features[16] (n_items_latest).window_s": "only count/mean have a window",
        "features[17] (zone_busy).custom": "a custom feature names its CustomFeatures",
        "features[18] (zone_total_min).aggregate": (
            "'median' is not one of ('mean', 'p90', 'count', 'sum') (or custom=BatchJob(...))"
        ),
        "features[18] (zone_total_min).events": "names no event",
        "features[18] (zone_total_min).value": "a median needs a value",
    }


def test_label_problems_name_the_join_pair_and_the_event() -> None:
    label = dataclasses.replace(
        ETA.label, event=ItemClicked, join=(("order_id", "order_id"), ("basket", "item_id"))
    )
    problems = problems_of(dataclasses.replace(ETA, label=label))
    assert problems["label.event"] == "item_clicked is not one of the task's events"
    assert problems["label.join[0]"] == "item_clicked has no field 'order_id'"
    assert problems["label.join[1]"].startswith("'basket' is no key of the task's requests")


def test_the_arm_may_be_a_join_key_and_a_window_must_be_positive() -> None:
    label = dataclasses.replace(
        ETA.label, event=OrderDelivered, join=((ARM, "courier_id"),), window_s=0.0
    )
    assert problems_of(dataclasses.replace(ETA, label=label)) == {
        "label.window_s": "0.0 is not > 0 seconds"
    }


def test_model_kind_objective_metric_and_drift_features_are_checked() -> None:
    assert problems_of(
        dataclasses.replace(ETA, model=Model("binary", objective="reg:squarederror", metric="auc"))
    ) == {"model.objective": "'reg:squarederror' is not a binary objective (binary:...)"}
    problems = problems_of(
        dataclasses.replace(
            ETA,
            model=Model(
                "survival", objective="survival:cox", metric="auc", drift_features=("speed",)
            ),
        )
    )
    assert set(problems) == {"model.kind", "model.drift_features[0]"}
    problems = problems_of(
        dataclasses.replace(ETA, model=Model("regression", "reg:squarederror", metric="r2"))
    )
    assert problems == {"model.metric": "'r2' is not one of ('mae', 'rmse', 'logloss', 'auc')"}


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (
            Model("binary", objective="binary:logistic"),
            "'mae' does not judge a binary model (one of ('rmse', 'logloss', 'auc'))",
        ),
        (
            Model("regression", objective="reg:squarederror", metric="logloss"),
            "'logloss' does not judge a regression model (one of ('mae', 'rmse'))",
        ),
        (
            Model("ranking", objective="rank:ndcg", metric="auc"),
            "'auc' does not judge a ranking model "
            "(none yet: the trainer fits regression and binary models)",
        ),
    ],
)
def test_the_metric_must_judge_the_models_kind(model: Model, problem: str) -> None:
    assert problems_of(dataclasses.replace(ETA, model=model)) == {"model.metric": problem}


@pytest.mark.parametrize("objective", ["binary:logitraw", "binary:hinge"])
def test_a_binary_model_predicts_a_probability(objective: str) -> None:
    model = Model("binary", objective=objective, metric="logloss")
    assert problems_of(dataclasses.replace(ETA, model=model)) == {
        "model.objective": (
            f"{objective!r} does not predict a probability; a binary model is fitted with "
            "binary:logistic"
        )
    }


def test_a_binary_task_of_ones_own_has_no_problem() -> None:
    assert check(BINARY) == []


def test_router_policy_params_and_items_are_checked() -> None:
    assert set(problems_of(dataclasses.replace(ETA, router=RouterPolicy("greedy")))) == {
        "router.policy"
    }
    assert (
        "declare router.items"
        in problems_of(dataclasses.replace(ETA, router=RouterPolicy("linucb")))["router.policy"]
    )
    assert "router.params/prior" in problems_of(
        dataclasses.replace(ETA, router=RouterPolicy("epsilon_greedy", params={"epsilon": 2}))
    )
    items = ItemArms(count=0, categorical=("user_feature_0",), categories=(3, 0), numeric=("x",))
    problems = problems_of(
        dataclasses.replace(RECS, router=dataclasses.replace(RECS.router, items=items))
    )
    assert set(problems) == {
        "router.items.count",
        "router.items.categories",
        "router.items.numeric[0]",
    }


def test_a_task_event_that_is_not_a_domain_event_is_named() -> None:
    spec = dataclasses.replace(ETA, events=(*ETA.events, CourierOnline, int))
    assert problems_of(spec) == {"events[8]": "<class 'int'> is not a contract class (Message)"}
