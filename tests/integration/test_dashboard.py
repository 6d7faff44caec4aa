"""The dashboard against a real broker, looked at in headless Chromium.

A storm run of the marketplace simulator is turned into what a running stack
writes (events, feature vectors, predictions by three model versions, labelled
training examples, model announcements with lineage, a router checkpoint,
dead letters) and produced straight onto the topics, stamped as if written over
the last two minutes. The dashboard starts on that history; then a browser
loads the page, the test checks that each panel shows what was produced, sends
one more dead letter to see the page update live, and saves a screenshot.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright
from rtml.shared import topics
from rtml.shared.contracts import (
    ArmSummary,
    DlqRecord,
    FeatureVector,
    Message,
    ModelAnnouncement,
    PredictEnriched,
    Prediction,
    PredictRequest,
    RouterState,
    TrainingExample,
    Trigger,
    encode,
)
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import tasks

from rtml.tasks.eta.events import OrderDelivered, OrderPlaced
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from tests.helpers import service_process
from tests.tools import missing_tool

CHROMIUM = os.environ.get("RTML_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard.png"
# the page must show the produced history within this long (a bound, not a measurement)
PAGE_WAIT_MS = 30_000

# the simulated run: a storm 90 minutes in; 3 simulated hours pass in 2 wall minutes
SIM = SimConfig(
    seed=11, scenario="storm", shift_at_s=90 * 60, orders_per_hour=150, id_prefix="dash"
)
SIM_HOURS = 3.0
SPEEDUP = 90.0
STORM_TS = SIM.start_ts + SIM.shift_at_s

SCRATCH = "eta-20240603T090000Z-5a17c0"
FINE_TUNED = "eta-20240603T125500Z-d71f7e"
SCHEDULED = "eta-20240603T134500Z-0b3c9a"
DETECTED_TS = STORM_TS + 25 * 60  # the drift detector fires 25 simulated minutes into the storm
PROMOTED_TS = STORM_TS + 60 * 60
SCHEDULED_TS = STORM_TS + 75 * 60
SHA = "ab" * 32
# the hops of every prediction's timings_ms, in the order of the chain
HOPS = [
    "to_features",
    "freshness_wait",
    "features",
    "to_router",
    "routing",
    "to_prediction",
    "scoring",
]


@dataclass
class Produced:
    """What went onto the topics, and when (record timestamps) each message was written."""

    messages: list[tuple[str, Message, float]] = field(default_factory=list)

    def add(self, topic: topics.Topic, message: Message, wall_ts: float) -> None:
        self.messages.append((topic.name, message, wall_ts))

    def of(self, kind: type[Message]) -> list[Message]:
        return [m for _, m, _ in self.messages if isinstance(m, kind)]


# --- the stack's output for one simulated storm ------------------------------------


def stack_output(wall_start: float) -> Produced:
    """Deterministic: the simulator's events plus what the services would have written."""
    stream = list(simulate(SIM, SIM_HOURS * 3600))
    rng = random.Random(5)

    def wall(event_ts: float) -> float:
        return wall_start + (event_ts - SIM.start_ts) / SPEEDUP

    delivered = {e.order_id: e for e in stream if isinstance(e, OrderDelivered)}
    produced = Produced()
    announce(
        produced,
        SCRATCH,
        None,
        "registered",
        "trained from scratch on the warehouse",
        wall(SIM.start_ts) - 5,
        Trigger(kind="bootstrap"),
    )
    announce(produced, SCRATCH, None, "promoted", "first model", wall(SIM.start_ts) - 4)
    announcements = [
        (
            DETECTED_TS,
            FINE_TUNED,
            SCRATCH,
            "registered",
            "error drift; holdout mae 4.6 vs parent 5.9",
            Trigger(kind="error_drift"),
        ),
        (PROMOTED_TS, FINE_TUNED, SCRATCH, "promoted", "bandit: posterior best", None),
        (
            SCHEDULED_TS,
            SCHEDULED,
            FINE_TUNED,
            "registered",
            "schedule; holdout mae 4.5 vs parent 4.6",
            Trigger(kind="schedule"),
        ),
    ]
    last_seen: dict[str, float] = {}  # entity id -> event time of its latest event
    known_before: dict[str, dict[str, float]] = {}
    predictions: dict[str, Prediction] = {}
    for message in stream:
        while announcements and announcements[0][0] <= message.ts:
            at, version, parent, action, reason, trigger = announcements.pop(0)
            announce(produced, version, parent, action, reason, wall(at), trigger)
        if isinstance(message, PredictRequest):
            enriched = enrich(message, known_before.pop(message.entities["order_id"]), rng)
            prediction = predict(enriched, delivered.get(message.entities["order_id"]), rng)
            produced.add(topics.PREDICT_REQUESTS, message, wall(message.ts))
            produced.add(topics.PREDICT_ENRICHED, enriched, wall(message.ts) + 0.004)
            produced.add(topics.PREDICTIONS, prediction, wall(message.ts) + pipeline_s(prediction))
            predictions[message.entities["order_id"]] = prediction
            continue
        produced.add(topics.EVENTS, message, wall(message.ts))
        if isinstance(message, OrderPlaced):
            # the features of an order are what was known before it was placed
            known_before[message.order_id] = {
                k: v for k, v in last_seen.items() if k in (message.restaurant_id, message.zone_id)
            }
        for entity in ("restaurant_id", "zone_id"):
            if hasattr(message, entity):
                last_seen[getattr(message, entity)] = message.ts
        if isinstance(message, OrderDelivered) and message.order_id in predictions:
            produced.add(
                topics.TRAINING_EXAMPLES,
                label(predictions[message.order_id], message),
                wall(message.ts) + 0.05,
            )
    end = wall(SIM.start_ts + SIM_HOURS * 3600)
    produced.add(topics.ROUTER_STATE, router_state(produced.of(TrainingExample), end), end)
    for i, (service, reason) in enumerate(
        [("features", "schema"), ("features", "schema"), ("prediction", "handler")]
    ):
        produced.add(topics.DLQ, dead_letter(service, reason, end + i), end + i * 0.1)
    return produced


def announce(
    produced: Produced,
    version: str,
    parent: str | None,
    action: str,
    reason: str,
    at: float,
    trigger: Trigger | None = None,
) -> None:
    metrics = {"mae": 4.1 if version == SCRATCH else 4.6}
    message = ModelAnnouncement(
        ts=at, task="eta", model_version=version, action=action, parent_version=parent,
        sha256=SHA, feature_set="eta@1", metrics=metrics, reason=reason, trigger=trigger,
    )  # fmt: skip
    produced.add(topics.MODELS, message, at)


FEATURES = [
    "distance_km",
    "n_items",
    "restaurant_orders_30m",
    "restaurant_prep_p50_30m",
    "zone_couriers_online",
    "restaurant_prep_mean_28d",
]
BATCH_FEATURE_BUILT_TS = SIM.start_ts - 5 * 3600  # the nightly batch job ran at 06:00


def enrich(
    request: PredictRequest, last_seen: dict[str, float], rng: random.Random
) -> PredictEnriched:
    restaurant_age = (
        request.ts - last_seen[request.entities["restaurant_id"]]
        if request.entities["restaurant_id"] in last_seen
        else None
    )
    zone_age = (
        request.ts - last_seen[request.entities["zone_id"]]
        if request.entities["zone_id"] in last_seen
        else None
    )
    freshness = [
        None,
        None,
        restaurant_age,
        restaurant_age,
        zone_age,
        request.ts - BATCH_FEATURE_BUILT_TS,
    ]
    vector = FeatureVector(
        feature_set="eta@1",
        names=FEATURES,
        values=[
            request.inputs["distance_km"],
            request.inputs["n_items"],
            rng.randint(0, 9),
            rng.uniform(8, 25),
            rng.randint(2, 30),
            rng.uniform(10, 20),
        ],
        freshness_s=freshness,
        defaulted=[
            False,
            False,
            restaurant_age is None,
            restaurant_age is None,
            zone_age is None,
            False,
        ],
    )
    # the features service's hops, in fixed shares of one draw (so that the rest of the
    # history is drawn as before)
    spent = rng.lognormvariate(math.log(3.0), 0.3)
    timings = {"to_features": 0.3 * spent, "freshness_wait": 0.5 * spent, "features": 0.2 * spent}
    return PredictEnriched(
        id=request.id, ts=request.ts, task="eta", entities=request.entities,
        request_ts=request.ts, features=vector, timings_ms=timings,
    )  # fmt: skip


def serving_version(ts: float, rng: random.Random) -> str:
    """The bandit's choice: the fine-tuned arm takes over once it exists."""
    if ts < DETECTED_TS:
        return SCRATCH
    if ts >= SCHEDULED_TS and rng.random() < 0.15:
        return SCHEDULED
    progress = min(1.0, (ts - DETECTED_TS) / (PROMOTED_TS - DETECTED_TS))
    return FINE_TUNED if rng.random() < 0.3 + 0.6 * progress else SCRATCH


def predict(
    enriched: PredictEnriched, delivered: OrderDelivered | None, rng: random.Random
) -> Prediction:
    version = serving_version(enriched.ts, rng)
    truth_min = (delivered.ts - delivered.placed_ts) / 60 if delivered else 35.0
    # the model trained before the storm expects fair-weather rides
    bias = 1 / 1.35 if version == SCRATCH and enriched.ts + truth_min * 60 > STORM_TS else 1.0
    scoring = rng.lognormvariate(math.log(1.5), 0.5)
    between = rng.lognormvariate(math.log(7.0), 0.6)  # features -> prediction service
    timings = {
        **enriched.timings_ms,
        "to_router": 0.4 * between,
        "routing": 0.1 * between,
        "to_prediction": 0.5 * between,
        "scoring": scoring,
    }
    timings["total"] = sum(timings.values())
    return Prediction(
        id=enriched.id, ts=enriched.ts, task="eta", entities=enriched.entities,
        request_ts=enriched.request_ts, features=enriched.features, model_version=version,
        arm=version, prediction=max(5.0, truth_min * bias + rng.gauss(0, 4.0)), timings_ms=timings,
    )  # fmt: skip


def pipeline_s(prediction: Prediction) -> float:
    """Wall time from the request's record to its prediction's: the services' timings
    plus a few milliseconds of broker hops."""
    return (prediction.timings_ms["total"] + 3.0) / 1000


def label(prediction: Prediction, delivered: OrderDelivered) -> TrainingExample:
    return TrainingExample(
        id=prediction.id, ts=delivered.ts, task="eta", features=prediction.features,
        label=(delivered.ts - delivered.placed_ts) / 60, model_version=prediction.model_version,
        arm=prediction.arm, prediction=prediction.prediction, request_ts=prediction.request_ts,
        label_ts=delivered.ts,
    )  # fmt: skip


def router_state(examples: list[Message], at: float) -> RouterState:
    arms = []
    shares = {SCRATCH: 0.08, FINE_TUNED: 0.80, SCHEDULED: 0.12}
    for version in (SCRATCH, FINE_TUNED, SCHEDULED):
        rewards = [-abs(e.prediction - e.label) for e in examples if e.model_version == version]
        if version == SCHEDULED:
            rewards = rewards[:1]  # checkpointed when the newest arm had folded one reward
        mean = sum(rewards) / len(rewards) if rewards else math.nan
        if len(rewards) >= 2:
            sd = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
            half = 1.96 * sd / math.sqrt(len(rewards))
        else:
            half = math.nan  # what the router reports for an arm without enough rewards
        arms.append(
            ArmSummary(
                arm=version,
                pulls=len(rewards),
                mean=mean,
                ci_low=mean - half,
                ci_high=mean + half,
                share=shares[version],
            )
        )
    return RouterState(
        ts=at,
        task="eta",
        policy="thompson",
        decisions=len(examples),
        arms=arms,
        champion=FINE_TUNED,
    )


def dead_letter(service: str, reason: str, at: float) -> DlqRecord:
    error = (
        "predict_enriched.features.values: has 5 entries for 6 feature names"
        if reason == "schema"
        else "xgboost: feature_names mismatch"
    )
    return DlqRecord(
        ts=at,
        service=service,
        reason=reason,
        error_class="ContractError",
        error=error,
        topic="rtml.predict.routed",
        partition=0,
        offset=17,
    )


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium (or $RTML_CHROMIUM): pip cannot bring it, .ci/run installs it."""
    if not os.access(CHROMIUM, os.X_OK):
        missing_tool(
            f"Chromium is not installed at {CHROMIUM}: sudo apt-get install -y chromium "
            "(or set RTML_CHROMIUM to a Chromium binary)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of its own: the page's totals must be exactly what this test produced."""
    with EmbeddedBroker(port=free_port()) as running:
        yield running


@pytest.fixture
async def stack_history(own_broker: EmbeddedBroker) -> AsyncIterator[tuple[Settings, Produced]]:
    settings = Settings(kafka_port=own_broker.port)
    await ensure_topics(settings)
    # the history ends about when the page first shows it, as on a live stack
    produced = stack_output(wall_start=time.time() - SIM_HOURS * 3600 / SPEEDUP + 4)
    producer = await start_producer(settings)
    try:
        for topic, message, wall_ts in produced.messages:
            await producer.send(
                topic, encode(message), key=message.key, timestamp_ms=int(wall_ts * 1000)
            )
        await producer.flush()
    finally:
        await producer.stop()
    yield settings, produced


@pytest.fixture
def dashboard_url(stack_history: tuple[Settings, Produced]) -> Iterator[str]:
    settings, _ = stack_history
    port = free_port()
    env = {
        "RTML_KAFKA_PORT": str(settings.kafka_port),
        "RTML_DASHBOARD_PORT": str(port),
        "RTML_DASHBOARD_PUSH_INTERVAL_S": "0.5",
    }
    with service_process("rtml.services.dashboard", env, f"http://127.0.0.1:{port}/readyz"):
        yield f"http://127.0.0.1:{port}"


# --- the test ------------------------------------------------------------------------


async def test_dashboard_shows_the_stack_in_headless_chromium(
    chromium: str, dashboard_url: str, stack_history: tuple[Settings, Produced]
) -> None:
    settings, produced = stack_history
    predictions = produced.of(Prediction)
    examples = produced.of(TrainingExample)
    events = [m for m in produced.of(Message) if isinstance(m, tasks().events)]

    async with async_playwright() as playwright:
        with tempfile.TemporaryDirectory(prefix="rtml-chromium-") as profile:
            browser = await playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1440, "height": 900},
            )  # fmt: skip
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                problems = collect_problems(page)
                response = await page.goto(dashboard_url + "/")
                assert response is not None and response.status == 200

                # the whole history is on the page (the KPI counts every prediction)
                await page.wait_for_function(
                    "text => document.querySelector('#kpi-predictions .sub').textContent"
                    ".startsWith(text)",
                    arg=f"{len(predictions):,} predictions",
                    timeout=PAGE_WAIT_MS,
                )
                await page.wait_for_function(
                    "n => document.querySelectorAll('#chart-mae .points circle').length === n",
                    arg=len(mae_buckets(examples)),
                    timeout=PAGE_WAIT_MS,
                )
                shown = await page.evaluate(PAGE_FACTS)
                assert shown["connection"] == "live"
                assert shown["events"].startswith(f"{len(events):,} events")
                assert shown["rates_paths"] == 2 and all(shown["rates_lengths"]), (
                    "a throughput line is empty"
                )
                assert shown["latency_paths"] == 3 and all(shown["latency_lengths"])
                assert shown["hops"] == HOPS
                # one line for all versions, plus one per version with labels so far
                assert shown["mae_series"] == 1 + len({e.model_version for e in examples})
                # drift-triggered registration, then promotion, of the fine-tuned model
                assert {FINE_TUNED} == set(shown["drift_markers"])
                assert FINE_TUNED in shown["promoted_markers"]
                assert shown["traffic_layers"] == [SCRATCH, FINE_TUNED, SCHEDULED]
                assert shown["lineage_nodes"] == [SCRATCH, FINE_TUNED, SCHEDULED]
                assert sorted(shown["lineage_edges"]) == sorted(
                    [[SCRATCH, FINE_TUNED], [FINE_TUNED, SCHEDULED]]
                )
                assert shown["champion"] == [FINE_TUNED]
                # each version names what triggered its training
                assert shown["triggers"] == {
                    SCRATCH: "bootstrap", FINE_TUNED: "error drift", SCHEDULED: "schedule"
                }  # fmt: skip
                assert shown["arms"] == {SCRATCH: "8.0%", FINE_TUNED: "80%", SCHEDULED: "12%"}
                assert shown["dlq"] == {"features/schema": "2", "prediction/handler": "1"}
                assert set(shown["freshness"]) == {
                    "restaurant_orders_30m",
                    "restaurant_prep_p50_30m",
                    "zone_couriers_online",
                    "restaurant_prep_mean_28d",
                }

                snapshot = fetch_json(dashboard_url + "/api/snapshot")
                check_numbers(snapshot, produced)
                recent_mae = snapshot["mae"]["recent"]
                assert shown["mae_kpi"] == (
                    f"{recent_mae:.2f}" if recent_mae < 10 else f"{recent_mae:.1f}"
                )

                # live: a new dead letter reaches the open page without a reload
                producer = await start_producer(settings)
                try:
                    extra = dead_letter("collector", "late", time.time())
                    await producer.send_and_wait(topics.DLQ.name, encode(extra), key=extra.key)
                finally:
                    await producer.stop()
                await page.wait_for_function(
                    "() => document.querySelector('#dlq tr[data-service=collector] .count')"
                    "?.textContent === '1'",
                    timeout=PAGE_WAIT_MS,
                )
                SCREENSHOT.parent.mkdir(exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
                # before closing, which aborts the event stream on purpose
                seen_problems = list(problems)
            finally:
                await browser.close()
    assert seen_problems == []
    assert SCREENSHOT.stat().st_size > 10_000


def collect_problems(page: Page) -> list[str]:
    """The page's console errors and warnings, uncaught exceptions and failed requests."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    return problems


# what the page shows, read from its DOM
PAGE_FACTS = """() => {
  const all = (selector) => [...document.querySelectorAll(selector)];
  const text = (selector) => document.querySelector(selector)?.textContent ?? null;
  return {
    connection: text('#connection .label'),
    events: text('#kpi-events .sub'),
    mae_kpi: text('#kpi-mae .value'),
    rates_paths: all('#chart-rates path.series').length,
    rates_lengths: all('#chart-rates path.series').map(p => p.getTotalLength()),
    latency_paths: all('#chart-latency path.series').length,
    latency_lengths: all('#chart-latency path.series').map(p => p.getTotalLength()),
    mae_series: all('#chart-mae path.series').filter(p => p.getTotalLength() > 0).length,
    drift_markers: all('#chart-mae .marker.drift').map(m => m.dataset.version),
    promoted_markers: all('#chart-mae .marker.promoted').map(m => m.dataset.version),
    traffic_layers: all('#chart-traffic path.share').map(p => p.dataset.version),
    lineage_nodes: all('#lineage .node').map(n => n.dataset.version),
    lineage_edges: all('#lineage .edge').map(e => [e.dataset.parent, e.dataset.child]),
    champion: all('#lineage .node.champion').map(n => n.dataset.version),
    triggers: Object.fromEntries(all('#lineage .node').map(n => [n.dataset.version,
      [...n.querySelectorAll('.badge.drift, .badge.trigger')].map(b => b.textContent).join()])),
    arms: Object.fromEntries(all('#posteriors tr.arm')
      .map(r => [r.dataset.arm, r.querySelector('.share').textContent])),
    dlq: Object.fromEntries(all('#dlq tr[data-service]')
      .map(r => [`${r.dataset.service}/${r.dataset.reason}`,
                 r.querySelector('.count').textContent])),
    freshness: all('#freshness tr[data-feature]').map(r => r.dataset.feature),
    hops: all('#hops tr[data-hop]').map(r => r.dataset.hop),
  };
}"""


def mae_buckets(examples: list[Message], bucket_s: int = 300) -> dict[int, list[float]]:
    buckets: dict[int, list[float]] = {}
    for e in examples:
        buckets.setdefault(int(e.label_ts // bucket_s), []).append(abs(e.prediction - e.label))
    return buckets


def fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def check_numbers(snapshot: dict[str, Any], produced: Produced) -> None:
    """The snapshot's figures are the produced data's, within the histogram's 2%."""
    predictions = produced.of(Prediction)
    totals = [p.timings_ms["total"] for p in predictions]
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        expected = sorted(totals)[math.ceil(q * len(totals)) - 1]
        assert snapshot["latency"]["total_ms"][name] == pytest.approx(expected, rel=0.03)
    assert [h["hop"] for h in snapshot["latency"]["hops_ms"]] == HOPS
    for hop in snapshot["latency"]["hops_ms"]:
        spent = sorted(p.timings_ms[hop["hop"]] for p in predictions)
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            expected = spent[math.ceil(q * len(spent)) - 1]
            assert hop[name] == pytest.approx(expected, rel=0.03), (hop, name)
    # end to end: between the records' timestamps (whole milliseconds)
    written_ms = {
        (type(m), m.id): int(wall_ts * 1000)
        for _, m, wall_ts in produced.messages
        if isinstance(m, PredictRequest | Prediction)
    }
    end_to_end = sorted(
        written_ms[(Prediction, p.id)] - written_ms[(PredictRequest, p.id)] for p in predictions
    )
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        expected = end_to_end[math.ceil(q * len(end_to_end)) - 1]
        assert snapshot["latency"]["end_to_end_ms"][name] == pytest.approx(expected, rel=0.03)
    expected_mae = {
        b * 300: sum(v) / len(v) for b, v in mae_buckets(produced.of(TrainingExample)).items()
    }
    assert {p["t"]: pytest.approx(p["mae"]) for p in snapshot["mae"]["series"]} == expected_mae
    drift = [m for m in snapshot["markers"] if m["drift"]]
    # placed on the event-time axis via the stream's own clock: within a wall second of it
    assert [m["version"] for m in drift] == [FINE_TUNED]
    assert drift[0]["t"] == pytest.approx(DETECTED_TS, abs=2 * SPEEDUP)
    freshness = {f["feature"]: f for f in snapshot["freshness"]}
    ages = [e.features.freshness_s[5] for e in produced.of(PredictEnriched)]
    assert freshness["restaurant_prep_mean_28d"]["mean_s"] == pytest.approx(sum(ages) / len(ages))
    # one router checkpoint; the arm that has too few rewards has no interval (null, not NaN)
    [eta] = snapshot["router"]
    assert [a["arm"] for a in eta["arms"]] == [SCRATCH, FINE_TUNED, SCHEDULED]
    assert [a["ci_low"] is not None for a in eta["arms"]] == [True, True, False]
