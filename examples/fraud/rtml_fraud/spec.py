"""The fraud task: the probability that a card authorization will be charged back,
scored when it is authorized, from the card's recent activity."""

from __future__ import annotations

from rtml.shared.contracts import Message
from rtml.shared.tasks.spec import Entity, Feature, Label, Model, RouterPolicy, TaskSpec

from rtml_fraud.events import CardAuthorization, Chargeback

HOUR = 3600.0
DAY = 24 * HOUR
# a chargeback must come within this long of its authorization; none is a legitimate
# payment. Real chargebacks take weeks: the example's are hours (generator.py), so that
# a day of generated traffic closes windows and makes negative examples
LABEL_WINDOW_S = DAY


def amount(authorization: Message) -> float:
    assert isinstance(authorization, CardAuthorization)
    return authorization.amount


def charged_back(_: Message) -> float:
    return 1.0


def calibration(probability: float | list[float], label: float) -> float:
    """The router's reward in [0, 1]: one minus the probability's distance from what
    happened (a list is no probability: it earns nothing)."""
    if not isinstance(probability, float):
        return 0.0
    return 1.0 - abs(min(max(probability, 0.0), 1.0) - label)


TASK = TaskSpec(
    name="fraud",
    events=(CardAuthorization, Chargeback),
    entities=(Entity("card", key="card_id"),),
    # the label joins on the authorization, which no feature describes
    request_keys=("authorization_id",),
    features=(
        Feature("amount", "input", default=0.0),
        Feature("card_not_present", "input", default=0.0),
        Feature("foreign", "input", default=0.0),
        Feature("hour_of_day", "calendar"),
        Feature(
            "card_auths_10m", "count", entity="card", window_s=600.0, events=(CardAuthorization,)
        ),
        Feature(
            "card_auths_24h", "count", entity="card", window_s=DAY, events=(CardAuthorization,)
        ),
        Feature(
            "card_mean_amount_24h",
            "mean",
            entity="card",
            window_s=DAY,
            default=50.0,
            events=(CardAuthorization,),
            value=amount,
        ),
        Feature(
            "card_last_amount",
            "latest",
            entity="card",
            default=0.0,
            events=(CardAuthorization,),
            value=amount,
        ),
        Feature(
            "card_chargebacks_30d", "count", entity="card", window_s=30 * DAY, events=(Chargeback,)
        ),
        Feature(
            "card_hist_amount_p90",
            "batch",
            entity="card",
            default=100.0,
            events=(CardAuthorization,),
            value=amount,
            aggregate="p90",
        ),
    ),
    label=Label(
        Chargeback,
        join=(("authorization_id", "authorization_id"),),
        value=charged_back,
        reward=calibration,
        window_s=LABEL_WINDOW_S,
        # no chargeback within the window: the payment was legitimate
        when_missing=0.0,
    ),
    model=Model(
        "binary",
        objective="binary:logistic",
        metric="logloss",
        drift_features=("card_auths_10m", "amount"),
    ),
    router=RouterPolicy("thompson_beta"),
)
