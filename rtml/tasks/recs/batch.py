"""``rtml batch predict --task recs``: stage-1 recommendation lists on ``rtml.batch.predictions``.

Each run ranks the campaign's items per known segment and globally from both OBD
logs of the campaign (random and bts; ``rtml.tasks.recs.popularity`` says how), and
publishes one ``BatchPrediction`` per segment, keyed by segment on the compacted
topic. Like ``rtml batch features`` it first reads what the topic holds and sends
only the lists that changed, so a re-run over the same logs sends nothing.
"""

from __future__ import annotations

import hashlib

from rtml.shared import topics
from rtml.shared.contracts import BatchPrediction, encode
from rtml.shared.kafka import ensure_topics, read_all, send_all, start_producer
from rtml.shared.settings import Settings
from rtml.tasks.recs.obd import BEHAVIOURS, Campaign, UserFeatureEncoder, load_rounds
from rtml.tasks.recs.popularity import rank_segments


def batch_predictions(campaign: Campaign, k: int) -> list[BatchPrediction]:
    logs = [load_rounds(campaign, behaviour) for behaviour in BEHAVIOURS]
    as_of = float(max(log.timestamps.max() for log in logs))
    rankings = rank_segments(logs, UserFeatureEncoder.of_campaign(campaign), k)
    return [
        BatchPrediction(
            # the same list always gets the same id: a re-published one is recognisable
            id="batch-"
            + hashlib.sha256(repr((r.segment, r.items, r.scores, as_of)).encode()).hexdigest()[:32],
            ts=as_of,
            task="recs",
            segment=r.segment,
            items=r.items,
            scores=r.scores,
            n_rounds=r.n_rounds,
            n_clicks=r.n_clicks,
        )
        for r in rankings
    ]


async def publish(settings: Settings, predictions: list[BatchPrediction]) -> int:
    """Send the lists that differ from the topic's newest per segment; returns how many."""
    await ensure_topics(settings, [topics.BATCH_PREDICTIONS])
    held = {
        message.segment: message.id
        for _, message in await read_all(settings, topics.BATCH_PREDICTIONS.name)
        if isinstance(message, BatchPrediction)
    }
    changed = [p for p in predictions if held.get(p.segment) != p.id]
    producer = await start_producer(settings)
    try:
        await send_all(
            producer, [(topics.BATCH_PREDICTIONS.name, p.key, encode(p)) for p in changed]
        )
    finally:
        await producer.stop()
    return len(changed)
