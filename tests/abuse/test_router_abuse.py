"""Poison frames on the topics the router reads: each one dead-lettered, routing goes on."""

from __future__ import annotations

import urllib.request

from rtml.shared import topics

from tests.abuse.consumers import dead_letters_of, produce_frames
from tests.abuse.frames import hostile_frames
from tests.integration.test_router_service import (  # noqa: F401 (stack is a fixture)
    Stack,
    routed_messages,
    running_router,
    send,
    stack,
)
from tests.unit.test_router_handlers import announcement, enriched, reward


async def test_every_poison_frame_is_dead_lettered_and_routing_goes_on(
    stack: Stack,  # noqa: F811 (pytest's fixture, imported above)
) -> None:
    await send(stack.settings, topics.MODELS.name, [announcement("v1")])
    with running_router(stack) as router:
        poisoned = {}
        for topic, template in (
            (topics.PREDICT_ENRICHED.name, enriched("template")),
            (topics.REWARDS.name, reward("template", "v1", 1.0)),
        ):
            frames = hostile_frames(template)
            poisoned[topic] = (frames, await produce_frames(stack.settings, topic, frames))
        after = enriched("after-the-poison")
        await send(stack.settings, topics.PREDICT_ENRICHED.name, [after])

        for topic, (frames, positions) in poisoned.items():
            letters = await dead_letters_of(stack.settings, "router", topic, positions)
            assert sorted(letters) == sorted(frames), topic
            for name, letter in letters.items():
                assert letter.error_class and letter.error, (topic, name)
                assert letter.reason in ("decode", "schema"), (topic, name)
                assert letter.original == (frames[name] or b""), (topic, name)
        assert after.id in {r.id for r in await routed_messages(stack.settings, 1)}
        assert router.process.poll() is None
        with urllib.request.urlopen(f"{router.url}/readyz", timeout=10) as response:
            assert response.status == 200
