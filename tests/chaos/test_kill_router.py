"""kill -9 the router 3-5 times at seeded points while rewards (with repeats) flow.

The consistency checker reads ``rtml.rewards`` back with a plain aiokafka
consumer and folds it, with each record's partition and offset, into the pure
router core: the last router's posterior must equal that fold (each request id
counted once, none lost). The last router started from a checkpoint and
re-read the rewards after it; a router started after it with its checkpoints
ignored is the replay from earliest -- the test of the state's rebuild, not of
the fold -- and is left to ``test_router_service`` (it owns the router's state).
"""

from __future__ import annotations

import asyncio
import random
from contextlib import ExitStack
from pathlib import Path

import pytest
from rtml.services.router.handlers import Router, RouterConfig
from rtml.services.router.ledger import LogPosition
from rtml.shared import topics
from rtml.shared.contracts import Message, Reward, RouterState
from rtml.shared.embedded_broker import EmbeddedBroker
from rtml.shared.kafka import read_all
from rtml.shared.model_store import ModelStore
from rtml.shared.settings import Settings

from tests.chaos.conftest import CHAOS_TIMEOUT_S, ChaosSetting, PacedStream, kill_points
from tests.integration.test_router_service import (
    Stack,
    expected_statistics,
    running_router,
    send,
    statistics,
    wait_until,
)
from tests.unit.test_router_handlers import announcement, reward, same_posterior

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TIMEOUT_S)]
ARMS = {"v1": 0.3, "v2": 0.6}
ROUTER_ENV = {"RTML_ROUTER_CHECKPOINT_EVERY": "200", "RTML_LOG_LEVEL": "WARNING"}


def reward_stream(count: int, rng: random.Random) -> list[Reward]:
    """Bernoulli rewards for two arms, 5% of them sent twice a little later (as a
    collector's redelivery would)."""
    rewards = []
    for i in range(count):
        arm = rng.choice(sorted(ARMS))
        rewards.append(reward(f"rq-{i}", arm, float(rng.random() < ARMS[arm])))
    keyed = [(i, r) for i, r in enumerate(rewards)]
    keyed += [(i + rng.uniform(1, 200), r) for i, r in enumerate(rewards) if rng.random() < 0.05]
    return [r for _, r in sorted(keyed, key=lambda ir: ir[0])]


def to_rewards(_: Message) -> str:
    return topics.REWARDS.name


def folded_from_topic(settings: Settings) -> tuple[RouterState, list[Reward]]:
    """The pure core's posterior after folding the rewards topic, by log position."""
    router = Router(RouterConfig())
    for arm in ARMS:
        router.on_announcement(announcement(arm))
    records = asyncio.run(read_all(settings, topics.REWARDS.name))
    folded = []
    for record, message in records:
        assert isinstance(message, Reward)
        router.on_reward(message, LogPosition(record.partition, record.offset))
        folded.append(message)
    return router.state("eta", 0.0), folded


def test_kill_9_router_while_rewards_flow(
    own_broker: EmbeddedBroker, chaos: ChaosSetting, rng: random.Random, tmp_path: Path
) -> None:
    stack = Stack(Settings(kafka_port=own_broker.port), ModelStore(tmp_path / "models"))
    asyncio.run(send(stack.settings, topics.MODELS.name, [announcement(arm) for arm in ARMS]))
    stream = reward_stream(2 * chaos.join_orders, rng)
    unique = len({r.id for r in stream})
    kills = 0
    with ExitStack() as routers:
        router = routers.enter_context(running_router(stack, **ROUTER_ENV))
        with PacedStream(stack.settings, to_rewards, stream, chaos.stream_s) as paced:
            for point in kill_points(rng, chaos.kills):
                while paced.fraction_sent() < point:
                    asyncio.run(asyncio.sleep(0.05))
                router.kill()
                kills += 1
                router = routers.enter_context(running_router(stack, **ROUTER_ENV))
        paced.join()
        wait_until(lambda: sum(router.pulls().values()) == unique, timeout_s=120)
        after = router.states()["eta"]
        absorbed = router.metric("rtml_router_rewards_total", outcome="duplicate")

    expected, on_topic = folded_from_topic(stack.settings)
    assert len(on_topic) == len(stream) and kills == chaos.kills
    assert statistics(after) == expected_statistics(on_topic)
    assert same_posterior(after, expected)
    print(
        f"\nrouter kill -9 [{chaos.name}]: {len(stream)} rewards ({len(stream) - unique} repeats), "
        f"{kills} kills, posterior = the pure fold of the topic, 0 lost; the last router "
        f"absorbed {absorbed:.0f} repeats"
    )
