"""Poison frames on the topics the features service reads: each one dead-lettered,
enrichment goes on."""

from __future__ import annotations

import time
import urllib.request

from rtml.shared import topics
from rtml.shared.contracts import PredictRequest, encode
from rtml.shared.settings import Settings

from rtml.tasks.eta.events import OrderPlaced
from tests.abuse.consumers import dead_letters_of, produce_frames
from tests.abuse.frames import hostile_frames
from tests.helpers import read_topic
from tests.integration.test_features import (  # noqa: F401 (own_broker is a fixture)
    own_broker,
    worker,
)

NOW = time.time()


async def test_every_poison_frame_is_dead_lettered_and_enrichment_goes_on(
    own_broker: Settings,  # noqa: F811 (pytest's fixture, imported above)
) -> None:
    settings = own_broker
    event = OrderPlaced(
        ts=NOW, order_id="o", restaurant_id="r1", zone_id="z1", distance_km=1.0, n_items=1
    )
    request = PredictRequest(ts=NOW, task="eta", entities={"restaurant_id": "r1", "zone_id": "z1"})
    with worker(settings) as (process, url):
        poisoned = {}
        for topic, template in (
            (topics.EVENTS.name, event),
            (topics.PREDICT_REQUESTS.name, request),
        ):
            frames = hostile_frames(template)
            poisoned[topic] = (frames, await produce_frames(settings, topic, frames))
        after = PredictRequest(ts=NOW, task="eta", entities={"restaurant_id": "r1"})
        await produce_frames(settings, topics.PREDICT_REQUESTS.name, {"after": encode(after)})

        for topic, (frames, positions) in poisoned.items():
            letters = await dead_letters_of(settings, "features", topic, positions)
            assert sorted(letters) == sorted(frames), topic
            for name, letter in letters.items():
                assert letter.error_class and letter.error, (topic, name)
                assert letter.reason in ("decode", "schema"), (topic, name)
                assert letter.original == (frames[name] or b""), (topic, name)
        enriched = await read_topic(
            settings, topics.PREDICT_ENRICHED.name, expected=1, timeout_s=60
        )
        assert after.id in {m.id for m in enriched}
        assert process.poll() is None
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as response:
            assert response.status == 200
