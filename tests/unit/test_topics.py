"""The configs topics are created with, and the replication settings behind them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rtml.shared import topics
from rtml.shared.settings import Settings


def test_min_insync_replicas_joins_each_topics_own_configs() -> None:
    assert topics.configs_of(topics.MODELS, None) == {"cleanup.policy": "compact"}
    assert topics.configs_of(topics.MODELS, 2) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }
    assert topics.configs_of(topics.EVENTS, 2) == {"min.insync.replicas": "2"}
    assert topics.MODELS.configs == {"cleanup.policy": "compact"}  # the registry unchanged


def test_min_insync_replicas_beyond_the_replicas_is_refused() -> None:
    assert Settings(replication_factor=3, min_insync_replicas=2).min_insync_replicas == 2
    with pytest.raises(ValidationError, match="RTML_MIN_INSYNC_REPLICAS=2 exceeds"):
        Settings(min_insync_replicas=2)
