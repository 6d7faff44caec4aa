"""The recs task: which item of the Open Bandit Dataset campaign to show a session,
learned from clicks, with the user features and the session's recent items."""

from __future__ import annotations

from rtml.shared.contracts import Message
from rtml.shared.tasks.spec import (
    ARM,
    Entity,
    Feature,
    ItemArms,
    Label,
    Model,
    RouterPolicy,
    ServingHook,
    TaskSpec,
)
from rtml.tasks.recs.events import Impression, ItemClicked, ItemViewed
from rtml.tasks.recs.features import (
    LAST_ITEMS,
    NO_ITEM,
    SESSION_EMBEDDING,
    SESSION_EMBEDDING_FEATURES,
    SESSION_WINDOW_S,
    item_embedding_records,
    item_id,
)
from rtml.tasks.recs.obd import USER_FEATURES


def clicked(_: Message) -> float:
    return 1.0


def click_is_reward(_: float | list[float], label: float) -> float:
    return label


def batch_lists() -> ServingHook:
    """Stage 1: the batch lists per user segment, served as they are (no model)."""
    # imported here: only the prediction service serves them
    from rtml.tasks.recs.serving import BatchListServing

    return BatchListServing()


TASK = TaskSpec(
    name="recs",
    events=(Impression, ItemViewed, ItemClicked),
    entities=(Entity("session", key="session_id"),),
    features=(
        Feature("hour_of_day", "calendar"),
        Feature("day_of_week", "calendar"),
        # a category code; -1 (no category) when the request does not give it
        *(Feature(name, "input", default=-1.0) for name in USER_FEATURES),
        # the session's latest items, most recent first
        *(
            Feature(
                f"last_{kind}_{slot}",
                "latest",
                entity="session",
                default=NO_ITEM,
                events=(event,),
                value=item_id,
                rank=slot,
            )
            for kind, event in (("viewed", ItemViewed), ("clicked", ItemClicked))
            for slot in range(1, LAST_ITEMS + 1)
        ),
        Feature(
            "session_views_30m",
            "count",
            entity="session",
            window_s=SESSION_WINDOW_S,
            events=(ItemViewed,),
        ),
        Feature(
            "session_clicks_30m",
            "count",
            entity="session",
            window_s=SESSION_WINDOW_S,
            events=(ItemClicked,),
        ),
        # the mean embedding of the items viewed or clicked in the window
        *(
            Feature(name, "custom", entity="session", custom=SESSION_EMBEDDING_FEATURES)
            for name in SESSION_EMBEDDING
        ),
    ),
    # the item table the session embedding reads, published by `rtml batch features`
    static_records=item_embedding_records,
    # a click on the recommended item within 30 minutes; none is a 0
    label=Label(
        ItemClicked,
        join=(("session_id", "session_id"), (ARM, "item_id")),
        value=clicked,
        reward=click_is_reward,
        window_s=SESSION_WINDOW_S,
        when_missing=0.0,
        reward_with_features=True,
    ),
    # what `rtml train --task recs` fits today: the click rate as a regression
    model=Model("regression", objective="reg:absoluteerror", metric="mae"),
    router=RouterPolicy(
        "thompson_beta",
        # the Open Bandit Dataset's "all" campaign: 80 items; user_feature_0..3 have
        # 3, 5, 9 and 9 categories
        items=ItemArms(
            count=80,
            categorical=USER_FEATURES,
            categories=(3, 5, 9, 9),
            numeric=SESSION_EMBEDDING,
        ),
    ),
    serving=batch_lists,
)
