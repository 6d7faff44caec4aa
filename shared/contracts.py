"""Message contracts: one versioned schema per message kind, encoded as msgpack.

On the wire every message is a msgpack map carrying ``schema`` (the kind's
name), ``version`` ("MAJOR.MINOR"), a unique ``id`` and an event-time ``ts``
(seconds since the epoch, as the producer of the fact saw it) next to the
kind's own fields.

Compatibility rule: a minor bump only adds optional fields, so a reader accepts
any minor of its major and ignores fields it does not know; a different major is
rejected, because the meaning of existing fields may have changed.
"""

from __future__ import annotations

import math
import uuid
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

import msgpack
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from rtml.shared.errors import ContractError

# Bounds for untrusted input: a message far larger than any rtml produces is
# an attack or a bug, never data.
MAX_MESSAGE_BYTES = 1 << 20
UNPACK_LIMITS = dict(
    max_str_len=1 << 16,
    max_bin_len=MAX_MESSAGE_BYTES,
    max_array_len=1 << 16,
    max_map_len=1 << 12,
    max_ext_len=0,
)
# the integers msgpack carries (a JSON integer has no bound)
MSGPACK_INT_MIN, MSGPACK_INT_MAX = -(2**63), 2**64 - 1
# a key of the validation context: a reader of answers the server already checked (the
# Python client, rtml.client) takes their task as given, so it need not have the
# server's tasks installed
TASK_CHECKED_UPSTREAM = "task_checked_upstream"


def registered_task(name: str, info: ValidationInfo) -> str:
    """``name`` if a loaded task has it; otherwise a ValueError naming the known tasks,
    so a bad task is a 400 at ingestion and a DLQ record on a topic like any bad field."""
    if info.context and info.context.get(TASK_CHECKED_UPSTREAM):
        return name
    # imported here: the task modules the registry loads import these contracts
    from rtml.shared.tasks.registry import task_spec

    task_spec(name)
    return name


class _RegisteredTaskSchema:
    """In a JSON schema (the OpenAPI document, `rtml schemas`), a task is one of the
    names loaded when the schema is made: a client learns them, a fuzzer keeps to them."""

    @staticmethod
    def __get_pydantic_json_schema__(core_schema: Any, handler: Any) -> dict[str, Any]:
        from rtml.shared.tasks.registry import tasks

        return {**handler(core_schema), "enum": sorted(tasks().names)}


# the name of a task of the registry (shared/tasks)
Task = Annotated[str, AfterValidator(registered_task), _RegisteredTaskSchema]


def new_id() -> str:
    return uuid.uuid4().hex


class Message(BaseModel):
    """Fields every message has; subclasses set SCHEMA, VERSION and KEY_FIELD."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=1024)

    SCHEMA: ClassVar[str]
    VERSION: ClassVar[tuple[int, int]] = (1, 0)
    # the field whose value keys the message on its topic (entity or request id)
    KEY_FIELD: ClassVar[str] = "id"
    # whether ``id`` is the id of the predict request the message belongs to: the id
    # travels the whole chain (request, enriched, routed, prediction, and the training
    # example and reward made of it), and every service binds it to its log lines as
    # ``request_id`` (``request_id`` below), so one request can be followed by grep
    CARRIES_REQUEST_ID: ClassVar[bool] = False

    id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    ts: float = Field(description="event time, seconds since the epoch")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # "schema" and "version" are the envelope's keys on the wire
        clashing = {"schema", "version"} & set(cls.__annotations__)
        if clashing:
            raise TypeError(f"{cls.__name__} may not have fields named {sorted(clashing)}")

    @field_validator("ts")
    @classmethod
    def _finite_ts(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be a finite, non-negative number of seconds")
        return value

    @property
    def key(self) -> bytes:
        return str(getattr(self, self.KEY_FIELD)).encode()

    @property
    def request_id(self) -> str | None:
        """The id of the predict request this message belongs to, if it belongs to one."""
        return self.id if self.CARRIES_REQUEST_ID else None

    def to_wire(self) -> dict[str, Any]:
        body = self.model_dump(mode="python")
        body["schema"] = self.SCHEMA
        body["version"] = f"{self.VERSION[0]}.{self.VERSION[1]}"
        return body


# --- the predict chain -------------------------------------------------------


class PredictRequest(Message):
    """A request for a prediction; ``id`` is the request id that keys the chain."""

    SCHEMA = "predict_request"
    CARRIES_REQUEST_ID = True
    task: Task
    # the entities the features are looked up by (restaurant_id, zone_id, session_id, ...)
    entities: dict[str, str] = Field(default_factory=dict, max_length=32)
    # request-time inputs (distance_km, n_items, ...)
    inputs: dict[str, float] = Field(default_factory=dict, max_length=64)
    # wall clock (epoch s) when ingestion accepted it: latencies are measured from
    # here, because event time runs faster than the wall in a simulation or replay
    received_at: float | None = None

    @field_validator("inputs")
    @classmethod
    def _finite_inputs(cls, inputs: dict[str, float]) -> dict[str, float]:
        for name, value in inputs.items():
            if not math.isfinite(value):
                raise ValueError(f"input {name!r} must be finite")
        return inputs


class FeatureVector(BaseModel):
    """A named, ordered, versioned feature vector with freshness and fallback flags."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    feature_set: str = Field(min_length=1, description="name@version of the feature set")
    names: list[str]
    values: list[float]
    # event-time age (s) of the newest event behind each feature; None for request inputs
    freshness_s: list[float | None]
    defaulted: list[bool]

    @field_validator("values", "freshness_s", "defaulted")
    @classmethod
    def _same_length(cls, column: list[Any], info: Any) -> list[Any]:
        names = info.data.get("names")
        if names is not None and len(column) != len(names):
            raise ValueError(f"has {len(column)} entries for {len(names)} feature names")
        return column


class PredictEnriched(Message):
    SCHEMA = "predict_enriched"
    CARRIES_REQUEST_ID = True
    task: Task
    entities: dict[str, str] = Field(default_factory=dict)
    request_ts: float
    received_at: float | None = None
    features: FeatureVector
    timings_ms: dict[str, float] = Field(default_factory=dict)


class PredictRouted(PredictEnriched):
    SCHEMA = "predict_routed"
    model_version: str | None = None
    arm: str | None = None
    propensity: float = Field(default=1.0, gt=0, le=1)
    policy: str = "champion"


class Prediction(Message):
    SCHEMA = "prediction"
    CARRIES_REQUEST_ID = True
    task: Task
    entities: dict[str, str] = Field(default_factory=dict)
    request_ts: float
    received_at: float | None = None
    features: FeatureVector
    model_version: str
    arm: str | None = None
    propensity: float = Field(default=1.0, gt=0, le=1)
    prediction: float | list[float]
    # true when the requested version was unknown and the champion answered instead
    fell_back: bool = False
    timings_ms: dict[str, float] = Field(default_factory=dict)


class TrainingExample(Message):
    SCHEMA = "training_example"
    CARRIES_REQUEST_ID = True
    task: Task
    features: FeatureVector
    label: float
    model_version: str
    arm: str | None = None
    propensity: float = Field(default=1.0, gt=0, le=1)
    prediction: float | list[float]
    request_ts: float
    label_ts: float


class Reward(Message):
    """A bandit reward; ``id`` is the request id, so a repeat is recognisable."""

    SCHEMA = "reward"
    CARRIES_REQUEST_ID = True
    # 1.1: features
    VERSION = (1, 1)
    task: Task
    arm: str = Field(min_length=1)
    reward: float
    # the feature vector the decision was made with (recs): what a contextual policy
    # learns from, carried here so that each reward can be folded on its own
    features: FeatureVector | None = None


TriggerKind = Literal["bootstrap", "schedule", "error_drift", "input_drift", "manual"]


class Trigger(BaseModel):
    """What started the training of a model version, kept in its record and announced
    with it: the lineage says why each version exists."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # bootstrap: the task's first model from its history; schedule: the retrain
    # interval; error_drift: the champion's error shifted; input_drift: a watched
    # feature's distribution shifted; manual: ``rtml train``
    kind: TriggerKind
    # input_drift: the feature that moved
    feature: str | None = Field(default=None, max_length=128)
    # the n-th follow-up fine-tune of a drift's episode: after the episode's last fine-tune
    # (kept or dropped) the champion's error was still off its level before the drift, by
    # the episode's test (services/trainer/drift.py's Episode)
    follow_up: int = Field(default=0, ge=0)

    @property
    def text(self) -> str:
        """``error drift``, ``input drift on <feature>``, ``schedule``..."""
        words = self.kind.replace("_", " ")
        words = f"{words} on {self.feature}" if self.feature else words
        return f"{words}, follow-up {self.follow_up}" if self.follow_up else words


class ModelAnnouncement(Message):
    SCHEMA = "model_announcement"
    # 1.1: trigger
    VERSION = (1, 1)
    KEY_FIELD = "model_version"
    task: Task
    # not "version": that key of the wire map is the schema's MAJOR.MINOR
    model_version: str = Field(min_length=1)
    action: Literal["registered", "promoted", "retired"]
    parent_version: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feature_set: str
    metrics: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    # what started its training (None: a version registered before triggers were kept)
    trigger: Trigger | None = None


class TrainerStatus(Message):
    """Where the trainer stands with a task's first model (rtml.trainer.status, compacted,
    keyed by task): what a service waiting for a champion can tell its users."""

    SCHEMA = "trainer_status"
    KEY_FIELD = "task"
    task: Task
    # has_champion: nothing to bootstrap; collecting: counting the requests on the
    # topics whose label has come; training: enough of them, stage 1 is running;
    # cannot_bootstrap: the task's first model cannot come from its events (detail: why)
    phase: Literal["has_champion", "collecting", "training", "cannot_bootstrap"]
    # requests of the task whose label has come, and how many the first model waits for
    labelled: int = Field(default=0, ge=0)
    needed: int = Field(default=0, ge=0)
    detail: str = ""


class ArmSummary(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    arm: str
    pulls: int = Field(ge=0)
    mean: float
    ci_low: float
    ci_high: float
    # probability the policy gives this arm now (its traffic share)
    share: float = Field(ge=0, le=1)


class RouterState(Message):
    """A router's posterior checkpoint for one task (compacted, keyed by task)."""

    SCHEMA = "router_state"
    KEY_FIELD = "task"
    # a snapshot may hold packed arrays (bytes): JSON shows them as base64
    model_config = ConfigDict(ser_json_bytes="base64")
    task: Task
    policy: str
    decisions: int = Field(ge=0)
    arms: list[ArmSummary]
    champion: str | None = None
    # the policy's own state, enough to rebuild it exactly
    snapshot: dict[str, Any] = Field(default_factory=dict)
    # per rewards partition, the next offset not yet folded into the posteriors
    reward_offsets: dict[str, int] = Field(default_factory=dict)


class BatchPrediction(Message):
    """One segment's precomputed recommendations (compacted ``rtml.batch.predictions``)."""

    SCHEMA = "batch_prediction"
    KEY_FIELD = "segment"
    task: Task
    # "<campaign>/<segment>"; "<campaign>/global" is the list for visitors of no known segment
    segment: str = Field(min_length=1, max_length=256)
    items: list[int] = Field(max_length=1000)
    scores: list[float] = Field(max_length=1000)
    # the logged rounds and clicks the list was computed from
    n_rounds: int = Field(ge=0)
    n_clicks: int = Field(ge=0)

    @field_validator("scores")
    @classmethod
    def _one_score_per_item(cls, scores: list[float], info: Any) -> list[float]:
        items = info.data.get("items")
        if items is not None and len(scores) != len(items):
            raise ValueError(f"has {len(scores)} scores for {len(items)} items")
        return scores


class DlqRecord(Message):
    SCHEMA = "dlq_record"
    service: str
    reason: str = Field(description="short machine-readable cause: decode, schema, handler, late")
    error_class: str
    error: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    attempt: int = 1
    original: bytes = b""


PREDICT_CHAIN: tuple[type[Message], ...] = (
    PredictRequest,
    PredictEnriched,
    PredictRouted,
    Prediction,
    TrainingExample,
    Reward,
    ModelAnnouncement,
    TrainerStatus,
    RouterState,
    BatchPrediction,
    DlqRecord,
)

# the messages rtml itself defines; the domain events are the loaded tasks'
# (``TaskSpec.events``, found by ``_kind_of`` through the task registry)
REGISTRY: dict[str, type[Message]] = {m.SCHEMA: m for m in PREDICT_CHAIN}


# --- codec -------------------------------------------------------------------


def encode(message: Message) -> bytes:
    return msgpack.packb(message.to_wire(), use_bin_type=True)


def unpack(data: bytes | None) -> Any:
    """msgpack bytes -> Python object, with the limits untrusted input needs."""
    if data is None:  # a Kafka record with a null value (a tombstone)
        raise ContractError("", "no message: the record's value is null")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ContractError("", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, **UNPACK_LIMITS)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        # StackError (nested too deeply) comes without a message
        raise ContractError("", f"not decodable msgpack: {str(exc) or type(exc).__name__}") from exc


def decode(data: bytes | None, expect: type[Message] | tuple[type[Message], ...] = ()) -> Message:
    """msgpack bytes -> a validated message; ``expect`` narrows the accepted kinds."""
    return from_wire(unpack(data), expect)


def from_wire(body: Any, expect: type[Message] | tuple[type[Message], ...] = ()) -> Message:
    if not isinstance(body, dict):
        raise ContractError("", f"expected a map, got {type(body).__name__}")
    kind = _kind_of(body)
    allowed = expect if isinstance(expect, tuple) else (expect,)
    if allowed and kind not in allowed:
        names = ", ".join(k.SCHEMA for k in allowed)
        raise ContractError("schema", f"{kind.SCHEMA!r} is not accepted here (expected {names})")
    fields = dict(body)
    del fields["schema"]
    version = fields.pop("version", None)
    if version is not None:
        _check_version(kind, version)
    try:
        return kind.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ContractError(field, first["msg"], kind.SCHEMA) from exc


def _kind_of(body: dict[str, Any]) -> type[Message]:
    name = body.get("schema")
    if not isinstance(name, str):
        raise ContractError("schema", "missing or not a string")
    kind = REGISTRY.get(name)
    if kind is None:
        # imported here: the task modules the registry loads import these contracts
        from rtml.shared.tasks.registry import tasks

        kind = tasks().event_schemas.get(name)
    if kind is None:
        raise ContractError("schema", f"unknown schema {name!r}")
    return kind


@lru_cache(maxsize=64)
def _parse_version(version: str) -> tuple[int, int] | None:
    major, _, minor = version.partition(".")
    # ASCII digits, and few: int() refuses "²" and strings of thousands of digits
    if not all(part.isascii() and part.isdigit() and len(part) <= 9 for part in (major, minor)):
        return None
    return int(major), int(minor)


def _check_version(kind: type[Message], version: Any) -> None:
    parsed = _parse_version(version) if isinstance(version, str) else None
    if parsed is None:
        raise ContractError("version", f"{version!r} is not MAJOR.MINOR", kind.SCHEMA)
    major, _ = parsed
    if major != kind.VERSION[0]:
        raise ContractError(
            "version",
            f"major version {major} is not supported (this reader knows "
            f"{kind.SCHEMA} {kind.VERSION[0]}.x)",
            kind.SCHEMA,
        )


# --- the wire map as JSON Schema ----------------------------------------------

JSON_SCHEMA_REF_TEMPLATE = "#/$defs/{model}"


def wire_json_schema(
    kind: type[Message], ref_template: str = JSON_SCHEMA_REF_TEMPLATE
) -> dict[str, Any]:
    """``kind``'s JSON Schema as the message is on the wire: its fields (pydantic's
    ``model_json_schema``), the ``schema``/``version`` envelope, and the bounds that
    live in validators or in msgpack rather than in field declarations. Nested
    models are under ``$defs``, referenced with ``ref_template``."""
    schema = kind.model_json_schema(ref_template=ref_template)
    properties = schema["properties"]
    properties["schema"] = {"const": kind.SCHEMA}
    properties["version"] = {
        "anyOf": [
            # a minor of up to 9 digits, as _parse_version reads it
            {"type": "string", "pattern": rf"^{kind.VERSION[0]}\.[0-9]{{1,9}}$"},
            {"type": "null"},
        ],
        "description": "MAJOR.MINOR; any minor of this major is accepted; null: the current",
    }
    # Message._finite_ts refuses negative times: a validator, so not in the field's schema
    properties["ts"]["minimum"] = 0
    for field in properties.values():
        if field.get("type") == "integer":
            field["minimum"] = max(field.get("minimum", MSGPACK_INT_MIN), MSGPACK_INT_MIN)
            field["maximum"] = min(field.get("maximum", MSGPACK_INT_MAX), MSGPACK_INT_MAX)
    schema["required"] = ["schema", *schema.get("required", [])]
    return schema
