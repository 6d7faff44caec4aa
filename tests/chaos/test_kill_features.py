"""kill -9 the features worker 3-5 times at seeded points while a keyed stream flows.

The consistency checker rebuilds the expected state from the raw topic: it
reads ``rtml.events`` back with a plain aiokafka consumer and folds it with the
pure reference (``shared/features/reference.py``). Once the last worker has
applied everything, every request's enriched vector must equal the reference's,
and the last worker's state must hold every accepted event exactly once
(recovered from the changelog + applied live = what the reference accepted):
no loss, and every redelivery absorbed.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from rtml.shared import topics
from rtml.shared.contracts import FeatureVector, Message, PredictEnriched, PredictRequest
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.features.definitions import Outcome
from rtml.shared.features.reference import ReferenceFeatures
from rtml.shared.settings import Settings

from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA
from tests.chaos.conftest import CHAOS_TIMEOUT_S, ChaosSetting, PacedStream, kill_points
from tests.helpers import read_topic, service_process
from tests.integration.test_features import (
    applied_offsets,
    assert_equal_to_reference,
    marker_events,
    metric_values,
    produce,
    wait_until_applied,
)
from tests.unit.test_features_state import disordered

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]
HOUR = 3600.0


@dataclass
class KeyedStream:
    """A simulated eta log, disordered with repeats; ``requests`` are answered at the end."""

    events: list[Message]
    requests: list[PredictRequest]
    lateness_s: float

    @classmethod
    def simulated(cls, chaos: ChaosSetting) -> KeyedStream:
        sim = SimConfig(seed=chaos.seed % 1000, n_restaurants=40, n_couriers=400,
                        orders_per_hour=450, id_prefix="chaos")  # fmt: skip
        log = list(simulate(sim, chaos.sim_hours * HOUR))
        events = [m for m in disordered(log, seed=chaos.seed, max_delay_s=HOUR)]
        return cls(
            events=[m for m in events if isinstance(m, ETA.events)],
            requests=[m for m in log if isinstance(m, PredictRequest)],
            # requests are answered after the whole log: the lateness must cover it
            lateness_s=(chaos.sim_hours + 2) * HOUR,
        )


@contextmanager
def features_worker(
    settings: Settings, lateness_s: float
) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    env = {
        "RTML_KAFKA_PORT": str(settings.kafka_port),
        "RTML_FEATURES_PORT": str(port),
        "RTML_FEATURES_ALLOWED_LATENESS_S": str(lateness_s),
        "RTML_LOG_LEVEL": "ERROR",
    }
    url = f"http://127.0.0.1:{port}"
    with service_process("rtml.services.features", env, f"{url}/readyz") as process:
        yield process, url


async def enriched_vectors(
    settings: Settings, requests: list[PredictRequest]
) -> dict[str, FeatureVector]:
    """Every request's enriched vector (a redelivered request gives the same one); the
    wait scales with the number of requests (the full setting has ~8k)."""
    await produce(settings, requests, topics.PREDICT_REQUESTS.name)
    timeout_s = 60 + len(requests) / 20
    enriched = await read_topic(settings, topics.PREDICT_ENRICHED.name, len(requests), timeout_s)
    return {m.id: m.features for m in enriched if isinstance(m, PredictEnriched)}


def to_events(_: Message) -> str:
    return topics.EVENTS.name


def duplicates_seen(url: str) -> float:
    return metric_values(url, "rtml_features_events_total", "outcome").get("duplicate", 0.0)


def test_kill_9_features_worker_during_a_keyed_stream(
    own_broker: EmbeddedBroker, chaos: ChaosSetting, rng: random.Random
) -> None:
    settings = Settings(kafka_port=own_broker.port)
    stream = KeyedStream.simulated(chaos)
    kills, duplicates = 0, 0.0
    with ExitStack() as workers:
        process, url = workers.enter_context(features_worker(settings, stream.lateness_s))
        with PacedStream(settings, to_events, stream.events, chaos.stream_s) as paced:
            for point in kill_points(rng, chaos.kills):
                while paced.fraction_sent() < point:
                    asyncio.run(asyncio.sleep(0.05))
                duplicates += duplicates_seen(url)  # a lower bound: the last second is lost
                process.send_signal(signal.SIGKILL)
                process.wait(30)
                kills += 1
                process, url = workers.enter_context(features_worker(settings, stream.lateness_s))
        ends = {partition: end for (_, partition), end in paced.join().items()}
        # a partition the killed worker had finished shows no progress on the new one
        markers = asyncio.run(produce(settings, marker_events(settings), topics.EVENTS.name))
        wait_until_applied([url], {p: max(ends.get(p, 0), e) for p, e in markers.items()}, 120)
        vectors = asyncio.run(enriched_vectors(settings, stream.requests))
        counts = metric_values(url, "rtml_features_events_total", "outcome")
        recovered = metric_values(url, "rtml_features_events_recovered_total").get("", 0.0)
        duplicates += counts.get("duplicate", 0.0)
        assert sum(applied_offsets(url).values()) > 0

    expected = Expected.from_topic(settings, stream, len(stream.events) + len(markers))
    assert kills == chaos.kills
    assert_equal_to_reference(vectors, expected.vectors)
    assert recovered + counts.get("accepted", 0) == expected.accepted, "an event lost or doubled"
    print(
        f"\nfeatures kill -9 [{chaos.name}]: {len(stream.events)} events, {kills} kills, "
        f"{len(vectors)} vectors equal to the reference, 0 lost, {recovered:.0f} recovered "
        f"from the changelog, {duplicates:.0f} duplicates absorbed "
        f"({expected.duplicates} of them in the stream itself)"
    )


@dataclass
class Expected:
    """What exactly-once processing of the raw topic gives, by the pure reference."""

    vectors: dict
    accepted: int
    duplicates: int

    @classmethod
    def from_topic(cls, settings: Settings, stream: KeyedStream, on_topic: int) -> Expected:
        raw = asyncio.run(read_topic(settings, topics.EVENTS.name, on_topic, timeout_s=120))
        assert len(raw) == on_topic
        reference = ReferenceFeatures(stream.lateness_s)
        outcomes = [reference.apply(event) for event in raw]
        return cls(
            vectors={r.id: reference.vector(r) for r in stream.requests},
            accepted=outcomes.count(Outcome.ACCEPTED),
            duplicates=outcomes.count(Outcome.DUPLICATE),
        )
