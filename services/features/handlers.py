"""The features service's pure logic: admit events, look up, assemble vectors. No I/O.

Adapters (``app.py`` for Kafka, ``http_adapter.py`` for HTTP) call these; neither
adds logic of its own, so both wirings give the same answers.

A request needs features of several entities whose state lives on whichever
worker owns each entity's partition. So enrichment is a **lookup plan**: the
request's entities in its task's order (its spec's ``entities``); each step runs
where that entity lives and adds its features to a ``Lookup`` that travels with
the request; the last step assembles the vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
from rtml.services.features.state import EntityStates
from rtml.shared.contracts import (
    FeatureVector,
    Message,
    PredictEnriched,
    PredictRequest,
    decode,
    from_wire,
    unpack,
)
from rtml.shared.errors import ContractError
from rtml.shared.features.definitions import (
    FeatureValue,
    Outcome,
    default,
    request_batch_features,
    request_features,
    task_vector,
)
from rtml.shared.features.records import BatchFeatureRecord
from rtml.shared.tasks.registry import task_spec, tasks
from rtml.shared.timings import FEATURES, FRESHNESS_WAIT, TO_FEATURES, ms, with_wait

# a changelog record holds a batch of events; Kafka's default request limit is 1 MiB
CHANGELOG_RECORD_MAX_BYTES = 256 * 1024


# --- events ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """An event that was not counted, with why (the DLQ reason) and where it came from."""

    index: int
    reason: str
    error: str


@dataclass
class AdmittedBatch:
    """What one fetched batch of raw events did to the state of its partition."""

    # the raw bytes of every accepted event, in admission order: the changelog record
    accepted: list[bytes] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def admit_events(states: EntityStates, raw_events: Sequence[bytes]) -> AdmittedBatch:
    """Decode and apply ``raw_events`` (one partition's, in offset order) to ``states``."""
    batch = AdmittedBatch()
    events = tasks().events
    for index, raw in enumerate(raw_events):
        try:
            event = decode(raw, events)
            outcome = states.apply(event)
        except ContractError as exc:
            batch.rejected.append(Rejected(index, exc.dlq_reason, str(exc)))
            continue
        except Exception as exc:  # a bug on one event must not stop its partition
            batch.rejected.append(Rejected(index, "handler", f"{type(exc).__name__}: {exc}"))
            continue
        if outcome is Outcome.ACCEPTED:
            batch.accepted.append(raw)
        elif outcome is Outcome.DUPLICATE:
            batch.duplicates += 1
        else:
            batch.rejected.append(Rejected(index, "late", _late_reason(states, event)))
    return batch


def _late_reason(states: EntityStates, event: Message) -> str:
    return (
        f"{type(event).SCHEMA} {event.id} at ts={event.ts} is more than "
        f"{states.allowed_lateness_s:g}s older than the newest event of its entity"
    )


def replay_changelog(states: EntityStates, record: bytes) -> int:
    """Re-apply one changelog record (a batch of accepted events); how many were new."""
    outcomes = [
        states.apply(decode(raw, tasks().events)) for raw in msgpack.unpackb(record, raw=False)
    ]
    return outcomes.count(Outcome.ACCEPTED)


def changelog_records(accepted: Sequence[bytes]) -> list[bytes]:
    """The accepted events as changelog records, each well under the producer's request limit."""
    records: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for raw in accepted:
        packed_size = len(raw) + 5  # msgpack's bin header is at most 5 bytes
        if chunk and size + packed_size > CHANGELOG_RECORD_MAX_BYTES:
            records.append(msgpack.packb(chunk, use_bin_type=True))
            chunk, size = [], 0
        chunk.append(raw)
        size += packed_size
    if chunk:
        records.append(msgpack.packb(chunk, use_bin_type=True))
    return records


# --- lookups -------------------------------------------------------------------------


@dataclass
class Lookup:
    """A request on its way through its lookup plan, with the features found so far."""

    request: PredictRequest
    # (entity, entity id) still to visit, first one next
    pending: list[tuple[str, str]]
    found: dict[str, FeatureValue]
    # the hops of this service so far (timings_ms), and the wall clock (epoch s) they reach
    timings_ms: dict[str, float]
    accounted_until: float

    @property
    def next_entity(self) -> tuple[str, str] | None:
        return self.pending[0] if self.pending else None

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "request": self.request.to_wire(),
                "pending": self.pending,
                "found": {name: list(value) for name, value in self.found.items()},
                "timings_ms": self.timings_ms,
                "accounted_until": self.accounted_until,
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Lookup:
        body: dict[str, Any] = unpack(data)
        return cls(
            request=from_wire(body["request"], PredictRequest),  # type: ignore[arg-type]
            pending=[(kind, entity_id) for kind, entity_id in body["pending"]],
            found={name: FeatureValue(*value) for name, value in body["found"].items()},
            # a record forwarded by a worker of the previous release (a rolling upgrade)
            # has only the time its first worker saw the request
            timings_ms=body.get("timings_ms", {}),
            accounted_until=body.get("accounted_until", body.get("received_at")),
        )


def plan(request: PredictRequest, seen_at: float) -> Lookup:
    """The lookups a request needs, which the service saw at ``seen_at`` (wall clock).
    Entities it does not name are cold starts."""
    pending: list[tuple[str, str]] = []
    found: dict[str, FeatureValue] = {}
    for entity in task_spec(request.task).entities:
        entity_id = request.entities.get(entity.key)
        if entity_id is None:
            found.update(unknown_entity(entity.name))
        else:
            pending.append((entity.name, entity_id))
    timings = with_wait({}, TO_FEATURES, request.received_at, seen_at)
    return Lookup(request, pending, found, timings, seen_at)


def account(lookup: Lookup, hop: str, until: float) -> Lookup:
    """The lookup with the time from where its hops end until ``until`` added to ``hop``.

    The hops then end at ``until`` even if that is earlier (another worker's clock,
    behind): what follows is measured on the clock that measures it.
    """
    timings = dict(lookup.timings_ms)
    timings[hop] = round(timings.get(hop, 0.0) + ms(until - lookup.accounted_until), 3)
    return replace(lookup, timings_ms=timings, accounted_until=until)


def held(lookup: Lookup, held_s: float) -> Lookup:
    """The lookup after the freshness barrier held it for ``held_s``."""
    return account(lookup, FRESHNESS_WAIT, lookup.accounted_until + held_s)


def unknown_entity(entity: str) -> dict[str, FeatureValue]:
    """The streaming features of an entity no event has named: every one its default."""
    return {feature.name: default(feature) for feature in tasks().entities[entity].streaming}


def entity_features(
    states: Sequence[EntityStates],
    entity: str,
    entity_id: str,
    t: float,
    batch: Mapping[str, BatchFeatureRecord],
) -> dict[str, FeatureValue]:
    """The streaming features of one entity as of ``t``, from the states that hold it."""
    for partition_states in states:
        state = partition_states.get(entity, entity_id)
        if state is not None:
            return state.features_at(t, batch)
    return unknown_entity(entity)


def advance(lookup: Lookup, features: Mapping[str, FeatureValue]) -> Lookup:
    """The lookup after its next entity's features were found."""
    return replace(lookup, pending=lookup.pending[1:], found={**lookup.found, **features})


def feature_vector(lookup: Lookup, batch: Mapping[str, BatchFeatureRecord]) -> FeatureVector:
    """The finished lookup as its task's vector, with request and batch features added."""
    request = lookup.request
    spec = task_spec(request.task)
    features = {
        **lookup.found,
        **request_features(request, spec),
        **request_batch_features(request, spec, batch),
    }
    return task_vector(spec, features)


def enriched(lookup: Lookup, vector: FeatureVector, now: float) -> PredictEnriched:
    """The request with its vector, made at ``now``: the work since the last hop is
    ``features``."""
    request = lookup.request
    return PredictEnriched(
        id=request.id,
        ts=request.ts,
        task=request.task,
        entities=request.entities,
        request_ts=request.ts,
        received_at=request.received_at,
        features=vector,
        timings_ms=account(lookup, FEATURES, now).timings_ms,
    )
