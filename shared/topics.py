"""The topic registry: every topic rtml uses, with its partitions and configs."""

from __future__ import annotations

from dataclasses import dataclass, field

COMPACT = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    # None: the deployment's default partition count (RTML_PARTITIONS)
    partitions: int | None = None
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.configs.get("cleanup.policy") == "compact"


EVENTS = Topic("rtml.events", "domain events keyed by entity (restaurant, zone, session)")
PREDICT_REQUESTS = Topic("rtml.predict.requests", "prediction requests keyed by request id")
PREDICT_ENRICHED = Topic("rtml.predict.enriched", "requests joined with their feature vector")
PREDICT_ROUTED = Topic("rtml.predict.routed", "enriched requests with the arm the router chose")
PREDICTIONS = Topic("rtml.predictions", "predictions with features, version, arm, propensity")
TRAINING_EXAMPLES = Topic("rtml.training.examples", "logged features joined with their label")
REWARDS = Topic("rtml.rewards", "bandit rewards keyed by request id")
MODELS = Topic("rtml.models", "model registrations, promotions, retirements", 1, COMPACT)
FEATURES_BATCH = Topic("rtml.features.batch", "batch features keyed by entity", None, COMPACT)
BATCH_PREDICTIONS = Topic("rtml.batch.predictions", "precomputed predictions", None, COMPACT)
ROUTER_STATE = Topic("rtml.router.state", "router posterior checkpoints", 1, COMPACT)
TRAINER_STATUS = Topic(
    "rtml.trainer.status", "the trainer's progress toward each task's first model", 1, COMPACT
)
DLQ = Topic("rtml.dlq", "messages a service could not process, with the reason", 1)

ALL: tuple[Topic, ...] = (
    EVENTS,
    PREDICT_REQUESTS,
    PREDICT_ENRICHED,
    PREDICT_ROUTED,
    PREDICTIONS,
    TRAINING_EXAMPLES,
    REWARDS,
    MODELS,
    FEATURES_BATCH,
    BATCH_PREDICTIONS,
    ROUTER_STATE,
    TRAINER_STATUS,
    DLQ,
)


def partitions_of(topic: Topic, default: int) -> int:
    return topic.partitions or default


def configs_of(topic: Topic, min_insync_replicas: int | None) -> dict[str, str]:
    """The configs a topic is created with: its own, and the deployment's
    ``min.insync.replicas`` (None: the broker's default)."""
    if min_insync_replicas is None:
        return dict(topic.configs)
    return {**topic.configs, "min.insync.replicas": str(min_insync_replicas)}
