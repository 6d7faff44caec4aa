"""The task specification: one frozen declaration of everything a task is.

A task (``eta``, ``recs``, a user's own) is declared once, in a module of its own
that defines ``TASK = TaskSpec(...)``; the registry (``registry.py``) loads it and
every service reads its decisions from it, never from the task's name.

    TASK = TaskSpec(
        name="eta",
        events=(OrderPlaced, OrderReady, ...),
        entities=(Entity("restaurant", key="restaurant_id"), Entity("zone", key="zone_id")),
        features=(
            Feature("distance_km", "input", default=3.0),
            Feature("restaurant_orders_10m", "count", entity="restaurant", window_s=600.0),
            ...
        ),
        label=Label(OrderDelivered, join=(("order_id", "order_id"),), value=..., reward=...),
        model=Model("regression", objective="reg:absoluteerror", metric="mae"),
        router=RouterPolicy("thompson_beta"),
    )

Feature execution today: the declared kinds and windows are data, checked by
``rtml tasks check``; the values are computed by the implementation of each
entity kind that ships in ``shared/features`` (reference, batch) and
``services/features/state.py`` (streaming), found by the entity's ``name`` --
that is the hook a spec points at (``ENTITY_KINDS`` in
``shared/features/definitions.py``). The generic execution of feature kinds
replaces it in a later step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from rtml.shared.contracts import Message

FeatureKind = Literal[
    # a request input (PredictRequest.inputs); ``default`` when the request leaves it out
    "input",
    # a calendar field of the request's event time (hour_of_day, day_of_week)
    "calendar",
    # how many events of the entity in the window
    "count",
    # the mean of a value over the entity's events in the window
    "mean",
    # the entity's latest value(s)
    "latest",
    # how many spans of the entity (opened by one event, closed by another) are open
    "span",
    # computed by a batch job over the event log, served from rtml.features.batch
    "batch",
]
FEATURE_KINDS: tuple[FeatureKind, ...] = (
    "input", "calendar", "count", "mean", "latest", "span", "batch",
)  # fmt: skip
# kinds that look back over a window of event time
WINDOWED_KINDS: tuple[FeatureKind, ...] = ("count", "mean")
# kinds that describe no entity: they come from the request itself
REQUEST_KINDS: tuple[FeatureKind, ...] = ("input", "calendar")

ModelKind = Literal["regression", "binary", "ranking"]
# the XGBoost objective families each model kind may use
OBJECTIVE_PREFIXES: dict[str, tuple[str, ...]] = {
    "regression": ("reg:",),
    "binary": ("binary:",),
    "ranking": ("rank:",),
}

# the prediction side of a label join that is the arm the router chose, not a request key
ARM = "arm"


@dataclass(frozen=True)
class Entity:
    """A thing features describe, named on its events and in a request by ``key``.

    ``name`` is the entity kind: the namespace of its state (``restaurant``), and
    the implementation of its features (see the module doc)."""

    name: str
    key: str


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind
    # the Entity.name it describes; None for the request kinds
    entity: str | None = None
    # look-back over event time, ``t - window_s < ts <= t``, for the windowed kinds
    window_s: float | None = None
    # the value when the entity is unknown, the window is empty or an input is missing
    # (the vector's ``defaulted`` flag says so)
    default: float = 0.0


@dataclass(frozen=True)
class Label:
    """What a prediction is judged by, and how it joins its prediction.

    The collector joins a prediction with the first ``event`` whose fields equal
    the prediction's on every ``join`` pair and whose event time is within
    ``window_s`` after the prediction's."""

    event: type[Message]
    # (prediction side, label event field) pairs: the prediction side is a key of
    # the request's entities, or ARM for the arm the router chose
    join: tuple[tuple[str, str], ...]
    # the label's value from its event
    value: Callable[[Message], float]
    # what the router learns from: (the prediction's output, the label's value) -> reward
    reward: Callable[[float | list[float], float], float]
    # how long after the prediction its label may come; None: the collector's join
    # window (RTML_COLLECTOR_WINDOW_S)
    window_s: float | None = None
    # the label of a prediction whose window closes without one (no click = 0);
    # None: such a prediction is dropped (counted), it makes no example
    when_missing: float | None = None
    # rewards carry the prediction's feature vector, for routers that learn per
    # context (items as arms)
    reward_with_features: bool = False


@dataclass(frozen=True)
class Model:
    kind: ModelKind
    # the XGBoost objective the trainer fits
    objective: str
    # the holdout metric that keeps a fine-tuned version or drops it (lower is better)
    metric: str = "mae"
    # features whose distribution the drift monitor watches besides the error
    drift_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemArms:
    """Arms that are items ``0 .. count - 1``, for the contextual policies. A request's
    context is ``[1, one-hot(each categorical feature), the numeric features]``: a
    categorical feature's value is a category code below its entry in ``categories``."""

    count: int
    categorical: tuple[str, ...]
    categories: tuple[int, ...]
    numeric: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouterPolicy:
    """The router's default for the task; ``RTML_ROUTER_POLICY_<TASK>``,
    ``RTML_ROUTER_PARAMS_<TASK>`` and ``RTML_ROUTER_PRIOR_<TASK>`` override it."""

    policy: str = "thompson_beta"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # the prior a newly announced version joins with
    prior: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # items the contextual policies may route over; None: only model versions
    items: ItemArms | None = None


@dataclass(frozen=True)
class TaskSpec:
    # lower-case letters, digits and "_": it names settings, warehouse partitions, metrics
    name: str
    # the domain events the task reads (contract classes, keyed on rtml.events by an entity)
    events: tuple[type[Message], ...]
    # the entities its features describe, in the order a request's lookups visit them
    entities: tuple[Entity, ...]
    # the vector's features, in the order the model sees them
    features: tuple[Feature, ...]
    label: Label
    model: Model
    router: RouterPolicy = field(default_factory=RouterPolicy)
    # keys a request names besides its entities' (a label may join on them)
    request_keys: tuple[str, ...] = ()
    # bumped when a feature changes meaning: vectors of two versions are not comparable
    version: int = 1

    @property
    def feature_set(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def inputs(self) -> tuple[Feature, ...]:
        return tuple(feature for feature in self.features if feature.kind == "input")

    def features_of(self, entity: str, kinds: tuple[FeatureKind, ...]) -> tuple[str, ...]:
        """The names of the features of one entity, of the given kinds."""
        return tuple(
            feature.name
            for feature in self.features
            if feature.entity == entity and feature.kind in kinds
        )

    def entity_key_names(self) -> tuple[str, ...]:
        return tuple(entity.key for entity in self.entities)
