"""The faust half of ``shared/broker_compat.py``: faust apps on the embedded broker.

faust builds its own aiokafka consumer, so the workarounds of
``broker_compat`` reach it through a transport subclass rather than through
consumer keyword arguments:

- **fetch wait**: faust hard-codes ``fetch_max_wait_ms=1500``. Tansu does not
  answer a waiting fetch when data arrives, so that is ~0.75 s per hop; the
  consumer here takes ``fetch_max_wait_ms`` from the app (5 ms on the embedded
  broker, faust's 1500 ms on Kafka, which answers a fetch as soon as data comes).
- **recovery end offsets**: table recovery reads each changelog up to its end
  offset. Tansu's ListOffsets LATEST answers too low, recovery stops early and
  updates are lost after a restart; on the embedded broker the end offsets come
  from a Fetch response's high watermark (``broker_compat.end_offsets``).
- **group timings**: Tansu holds every JoinGroup for about half the session
  timeout, so the embedded broker gets broker_compat's short session,
  heartbeat and rebalance timeouts (faust's defaults: ~30 s to start, ~2 min to
  rejoin).

Everything else is faust's own. ``CompatApp`` is a ``faust.App`` that uses this
transport; ``faust_options(settings)`` gives the broker settings of an app.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from shared import broker_compat
from shared.faust_worker import WatchedApp
from shared.settings import Settings

# what faust's aiokafka driver hard-codes
FAUST_FETCH_MAX_WAIT_MS = 1500


class CompatConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher
        consumer._fetch_max_wait_ms = cast(CompatApp, self.app).fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        app = cast(CompatApp, self.app)
        if not app.embedded or self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        # aiokafka only takes its own TopicPartition type, not faust's TP
        ends = await broker_compat.end_offsets(
            self._ensure_consumer(),
            [TopicPartition(tp.topic, tp.partition) for tp in partitions],
            embedded=True,
        )
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in partitions}


class CompatConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CompatConsumerThread(self, loop=self.loop, beacon=self.beacon)


class CompatTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = CompatConsumer


class CompatApp(WatchedApp):
    """A faust app whose consumer knows the broker it runs on."""

    Transport: ClassVar[type[faust_aiokafka.Transport]] = CompatTransport

    def __init__(
        self, id: str, *, embedded: bool, fetch_max_wait_ms: int | None = None, **options: Any
    ) -> None:
        self.embedded = embedded
        self.fetch_max_wait_ms = fetch_max_wait_ms or (
            broker_compat.EMBEDDED_FETCH_MAX_WAIT_MS if embedded else FAUST_FETCH_MAX_WAIT_MS
        )
        super().__init__(id, **options)

    def _new_transport(self) -> faust_aiokafka.Transport:
        return self.Transport(self.conf.broker_consumer, self)


def faust_options(settings: Settings) -> dict[str, Any]:
    """The broker settings of a faust app: address, credentials, group timings."""
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap}",
        "broker_credentials": _credentials(settings),
    }
    if settings.embedded:
        options.update(
            broker_session_timeout=broker_compat.EMBEDDED_SESSION_TIMEOUT_MS / 1000,
            broker_heartbeat_interval=broker_compat.EMBEDDED_HEARTBEAT_INTERVAL_MS / 1000,
            broker_rebalance_timeout=broker_compat.EMBEDDED_REBALANCE_TIMEOUT_MS / 1000,
        )
    return options


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    context: ssl.SSLContext | None = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
