"""Which ApiVersions answers make a broker the embedded kind (shared/broker_flavor.py)."""

from __future__ import annotations

import pytest
from rtml.shared.broker_flavor import KAFKA_ONLY_APIS, flavor_of

# what Tansu 0.6 advertises (tests/integration/test_broker_flavor.py asks the real one)
TANSU = {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26,
         28, 29, 30, 32, 36, 42, 44, 46, 50, 51, 60, 69, 71, 75}  # fmt: skip
# Apache Kafka 1.0 and later: every key from 0 to 37 and more
KAFKA = set(range(0, 68))


def test_kafka_is_kafka_and_tansu_is_embedded() -> None:
    assert flavor_of(KAFKA) == "kafka"
    assert flavor_of(TANSU) == "embedded"


@pytest.mark.parametrize("missing", sorted(KAFKA_ONLY_APIS))
def test_a_broker_without_any_one_of_them_gets_the_workarounds(missing: int) -> None:
    assert flavor_of(KAFKA - {missing}) == "embedded"
