"""The Prometheus metrics every service exports the same way, with bounded label sets.

- HTTP: ``rtml_http_requests_total{route, method, status}`` and
  ``rtml_http_request_seconds{route, method}``, labelled by the route's template
  (``/v1/predictions/{request_id}``), never the raw path: a scanner or a client
  polling ids adds no series (``http_metrics``, mounted by ``HealthEndpoints``).
- ``rtml_build_info{service, version, commit}`` and ``rtml_ready`` (``service.py``).
- Consumer lag: ``rtml_consumer_lag{group, topic, partition}``, read at scrape time
  from every consumer the process runs: each aiokafka consumer made by
  ``shared/kafka.py`` and each faust app (``shared/faust_worker.py``).
- ``forget_series``: what a service calls when a model version is retired, so that
  per-version series (``rtml_predictions_total{version}``...) go with it.

What each metric means, the dashboard and the alerts built on them: docs/OPERATING.md.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter(
    "rtml_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "rtml_http_request_seconds", "HTTP request handling time", ["route", "method"]
)
# a request no route matched (404, 405): one series for every such path
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# a consumer without a group (it reads partitions it assigned itself)
NO_GROUP = "none"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- HTTP ------------------------------------------------------------------------


def route_of(request: web.Request) -> str:
    """The template of the route that served ``request``, e.g. ``/v1/predictions/{request_id}``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by route template, method and status."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_of(request)
        method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
        HTTP_REQUESTS.labels(route, method, str(status)).inc()
        HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)


# --- per-version series ------------------------------------------------------------


def forget_series(metric: MetricWrapperBase, **labels: str) -> int:
    """Remove every series of ``metric`` whose labels include ``labels`` (e.g. a retired
    version's); returns how many went."""
    names = metric._labelnames  # prometheus_client keeps no public list of them
    removed = 0
    for family in metric.collect():
        seen = set()
        for sample in family.samples:
            if not labels.items() <= sample.labels.items():
                continue
            values = tuple(sample.labels[name] for name in names)
            if values not in seen:
                seen.add(values)
                metric.remove(*values)
                removed += 1
    return removed


# --- consumer lag ----------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    group: str
    topic: str
    partition: int
    # records between where the consumer is and the end of the partition
    records: int


LagSource = Callable[[], Iterable[Lag]]


class ConsumerLag(Collector):
    """``rtml_consumer_lag``, gathered at scrape time from the registered sources.

    The end of a partition is the high watermark of the consumer's last fetch from it
    (Kafka and the embedded broker both report it right in fetch responses), so this
    costs the broker nothing; a consumer that stopped fetching shows its last lag, and
    its service's ``/readyz`` (``rtml_ready``) says it is stuck.
    """

    def __init__(self) -> None:
        self._consumers: weakref.WeakSet[AIOKafkaConsumer] = weakref.WeakSet()
        self._sources: list[LagSource] = []

    def watch(self, consumer: AIOKafkaConsumer) -> None:
        self._consumers.add(consumer)

    def add_source(self, source: LagSource) -> None:
        self._sources.append(source)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "rtml_consumer_lag",
            "records from the consumer's position (aiokafka) or committed offset (faust) "
            "to the end of the partition, as of its last fetch",
            labels=["group", "topic", "partition"],
        )
        # two readers of one partition in a process (rare): the one further behind counts
        worst: dict[tuple[str, str, str], int] = {}
        for lag in self._lags():
            key = (lag.group, lag.topic, str(lag.partition))
            worst[key] = max(worst.get(key, 0), lag.records)
        for key, records in sorted(worst.items()):
            family.add_metric(list(key), float(records))
        yield family

    def _lags(self) -> Iterator[Lag]:
        for consumer in list(self._consumers):
            yield from aiokafka_lag(consumer)
        for source in self._sources:
            yield from source()


def aiokafka_lag(consumer: AIOKafkaConsumer) -> Iterator[Lag]:
    """The lag of each partition assigned to a running consumer that has fetched from it."""
    if consumer._closed is not False:  # stopped, or never started
        return
    subscription: Any = consumer._subscription.subscription
    if subscription is None or subscription.assignment is None:
        return
    group = consumer._group_id or NO_GROUP
    for tp in consumer.assignment():
        state = subscription.assignment.state_value(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            continue
        yield Lag(group, tp.topic, tp.partition, max(0, state.highwater - state.position))


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)
