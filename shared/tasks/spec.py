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

Features are executed three ways from the one declaration, so the three cannot
disagree: the streaming state of the features service (``services/features/state.py``),
the point-in-time reference that ``rtml skew``, the tests and bootstrap training use
(``shared/features/reference.py``), and the batch job (``shared/features/batch.py``).
A kind rtml does not build in is written once by the task as ``CustomFeatures`` (a
streaming state and its reference), or as a ``BatchJob``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rtml.shared.contracts import Message

if TYPE_CHECKING:
    from aiohttp import web
    from rtml.shared.features.records import BatchFeatureRecord
    from rtml.shared.settings import Settings

FeatureKind = Literal[
    # a request input (PredictRequest.inputs); ``default`` when the request leaves it out
    "input",
    # a calendar field of the request's event time (hour_of_day, day_of_week)
    "calendar",
    # how many events of the entity in the window
    "count",
    # the mean of a value over the entity's events in the window
    "mean",
    # the entity's latest value (``rank`` 1), or the one before it (2)...
    "latest",
    # how many spans of the entity (opened by one event, closed by another) are open
    "span",
    # the task's own streaming state and reference (``custom=CustomFeatures(...)``)
    "custom",
    # computed by a batch job over the event log, served from rtml.features.batch
    "batch",
]
FEATURE_KINDS: tuple[FeatureKind, ...] = (
    "input", "calendar", "count", "mean", "latest", "span", "custom", "batch",
)  # fmt: skip
# kinds that look back over a window of event time
WINDOWED_KINDS: tuple[FeatureKind, ...] = ("count", "mean")
# kinds that describe no entity: they come from the request itself
REQUEST_KINDS: tuple[FeatureKind, ...] = ("input", "calendar")
# kinds the features service keeps streaming state for
STREAMING_KINDS: tuple[FeatureKind, ...] = ("count", "mean", "latest", "span", "custom")
# how a batch feature's values over the whole log become one (statistics' definitions;
# p90 is the inclusive method's 90th percentile, a lone value its own)
BatchAggregate = Literal["mean", "p90", "count", "sum"]
BATCH_AGGREGATES: tuple[BatchAggregate, ...] = ("mean", "p90", "count", "sum")
# a span never closed (its closing event lost) stops counting this long after it opened
DEFAULT_MAX_OPEN_S = 3 * 3600.0

# What a feature is at ``t``: its value, None for "the feature's default"; and the
# event-time age (s) of the newest event behind it, None when there is none.
Reading = tuple[float | None, float | None]

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


class CustomState(Protocol):
    """The streaming half of ``CustomFeatures``: one per entity, fed its accepted
    events in arrival order (any event-time order, never the same id twice)."""

    def record(self, event: Message) -> None: ...

    def prune(self, horizon: float) -> None:
        """Forget what no answer for ``t >= horizon + lookback_s`` depends on."""

    def values_at(self, t: float, batch: Mapping[str, BatchFeatureRecord]) -> Mapping[str, Reading]:
        """Every one of ``names`` as of ``t``; ``batch`` holds rtml.features.batch."""
        ...


@dataclass(frozen=True, eq=False)
class CustomFeatures:
    """The escape hatch: features of one entity that the built-in kinds cannot express,
    written by the task twice -- a streaming state, and its plain reading over the
    entity's events -- which the tests of the task hold equal (``rtml skew`` compares
    live vectors with the reference). Every ``Feature(kind="custom", custom=this)``
    names one of ``names``; one state per entity serves them all."""

    names: tuple[str, ...]
    # the events the state is fed (keyed by the entity's key)
    events: tuple[type[Message], ...]
    state: Callable[[], CustomState]
    # (every accepted event of the entity, in any order, t, batch) -> names' readings
    reference: Callable[
        [Sequence[Message], float, Mapping[str, BatchFeatureRecord]], Mapping[str, Reading]
    ]
    # how far back of ``t`` an answer looks: what pruning keeps beyond the lateness
    lookback_s: float = 0.0


# entity id -> (value, event time of the newest event used, how many events were used)
BatchValues = Mapping[str, tuple[float, float, int]]


@dataclass(frozen=True, eq=False)
class BatchJob:
    """The escape hatch of batch features: a function of the whole log (ids deduplicated,
    log order) to the value of one feature per entity id."""

    compute: Callable[[Sequence[Message]], BatchValues]


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
    # count, mean, latest, batch: the events it is computed from; span: the events
    # that open a span. Keyed by the entity's key (batch: any event with that field).
    events: tuple[type[Message], ...] = ()
    # mean, latest, batch: what one event contributes
    value: Callable[[Message], float] | None = None
    # span: the events that close a span, the field that names a span on both ends,
    # and how long an unclosed span counts
    closes: tuple[type[Message], ...] = ()
    span_key: str | None = None
    max_open_s: float = DEFAULT_MAX_OPEN_S
    # latest: 1 for the newest value, 2 for the one before, ...
    rank: int = 1
    # batch: how the values become one (or ``custom=BatchJob(...)``)
    aggregate: BatchAggregate | None = None
    # custom: the CustomFeatures that computes it; batch: a BatchJob instead of an aggregate
    custom: CustomFeatures | BatchJob | None = None

    @property
    def sources(self) -> tuple[type[Message], ...]:
        """Every event that moves the feature: what its freshness is measured from."""
        if isinstance(self.custom, CustomFeatures):
            return self.custom.events
        return (*self.events, *self.closes)


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

    @property
    def joins_from_events(self) -> bool:
        """Whether the events alone pair each request with its label: not when the label
        joins on the arm, which only the router's choice knows. Only such a task's first
        model can be trained from an event log or ``rtml.events`` (cold start)."""
        return all(side != ARM for side, _ in self.join)


@dataclass(frozen=True)
class Model:
    """What the trainer fits and how a new version is judged; the prediction service
    serves what the booster predicts (a binary model: the probability of the positive
    class)."""

    kind: ModelKind
    # the XGBoost objective the trainer fits
    objective: str
    # the holdout metric that keeps a fine-tuned version or drops it, one of
    # shared/model_metrics.py (its direction and its error per example, which the
    # drift monitor watches)
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


class ServingHook(Protocol):
    """What a task serves besides its model's predictions, on the prediction service's
    HTTP port (say, lists computed by a batch job): its routes, and the work that keeps
    what they serve current, which runs until the service stops (cancelled)."""

    def routes(self) -> Sequence[web.RouteDef]: ...

    async def run(self, settings: Settings) -> None: ...


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
    # records published with the batch features that no event log gives (an item
    # table that custom features read); ``rtml batch features`` calls it
    static_records: Callable[[], Iterable[BatchFeatureRecord]] | None = None
    # makes the task's ServingHook, in the prediction service only (a factory, so that
    # what only serving needs is imported there and nowhere else); None: no more than
    # the model's predictions
    serving: Callable[[], ServingHook] | None = None

    @property
    def feature_set(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def inputs(self) -> tuple[Feature, ...]:
        return tuple(feature for feature in self.features if feature.kind == "input")

    def entity_key_names(self) -> tuple[str, ...]:
        return tuple(entity.key for entity in self.entities)
