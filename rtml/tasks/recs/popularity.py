"""Stage 1 of recs: the most clicked-through items per user segment, from logged rounds.

A *segment* is the pair of codes of ``user_feature_0`` and ``user_feature_1`` (the two
coarsest user features: 3 and 5 categories, 14 of the 15 pairs occur in the ``all``
log), named ``<campaign>/u0=<code>,u1=<code>``. Finer segments would hold a click or
two each in a sample of a few dozen clicks.

An item's score in a segment is its click-through rate shrunk towards the item's
overall rate, which is itself shrunk towards the log's overall rate, each by
``strength`` pseudo-impressions: a segment's list only departs from the global one
where its own clicks say so. A segment is *known*, and gets its own list, when the
log holds at least ``min_rounds`` of its impressions; every other visitor, including
one without user features, gets the global list (``<campaign>/global``) -- the cold
start of batch prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rtml.tasks.recs.obd import USER_FEATURES, LoggedRounds, UserFeatureEncoder

SEGMENT_FEATURES = USER_FEATURES[:2]
GLOBAL = "global"
DEFAULT_STRENGTH = 100.0
DEFAULT_MIN_ROUNDS = 100


def segment_name(campaign: str, codes: tuple[int, ...] | None) -> str:
    """The segment of ``codes`` (the codes of SEGMENT_FEATURES); None means global."""
    if codes is None:
        return f"{campaign}/{GLOBAL}"
    return f"{campaign}/" + ",".join(f"u{i}={code}" for i, code in enumerate(codes))


def segment_of_inputs(campaign: str, inputs: Mapping[str, float]) -> str | None:
    """The segment a request's user-feature codes name, or None when one is missing."""
    try:
        codes = tuple(int(inputs[name]) for name in SEGMENT_FEATURES)
    except KeyError:
        return None
    return segment_name(campaign, codes) if min(codes) >= 0 else None


@dataclass(frozen=True)
class Ranking:
    segment: str
    items: list[int]
    scores: list[float]
    n_rounds: int
    n_clicks: int


def shrunk_ctr(clicks: np.ndarray, rounds: np.ndarray, prior: np.ndarray | float, strength: float):
    return (clicks + strength * prior) / (rounds + strength)


def rank_segments(
    logs: list[LoggedRounds],
    encoder: UserFeatureEncoder,
    k: int,
    strength: float = DEFAULT_STRENGTH,
    min_rounds: int = DEFAULT_MIN_ROUNDS,
) -> list[Ranking]:
    """The global top-k and the top-k of every known segment, from one campaign's logs."""
    campaign = logs[0].campaign
    n_items = logs[0].n_items
    items = np.concatenate([log.items for log in logs])
    clicks = np.concatenate([log.clicks for log in logs])
    codes = np.vstack(
        [encoder.code_matrix(log.user_features)[:, : len(SEGMENT_FEATURES)] for log in logs]
    )
    item_rounds = np.bincount(items, minlength=n_items)
    item_clicks = np.bincount(items, weights=clicks, minlength=n_items)
    item_ctr = shrunk_ctr(item_clicks, item_rounds, clicks.mean(), strength)
    rankings = [_top(segment_name(campaign, None), item_ctr, len(items), int(clicks.sum()), k)]
    segments, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    for index in np.flatnonzero(counts >= min_rounds):
        members = inverse.ravel() == index
        rounds = np.bincount(items[members], minlength=n_items)
        hits = np.bincount(items[members], weights=clicks[members], minlength=n_items)
        scores = shrunk_ctr(hits, rounds, item_ctr, strength)
        name = segment_name(campaign, tuple(int(c) for c in segments[index]))
        rankings.append(_top(name, scores, int(counts[index]), int(hits.sum()), k))
    return rankings


def _top(segment: str, scores: np.ndarray, n_rounds: int, n_clicks: int, k: int) -> Ranking:
    # ties (items no segment click tells apart) go to the lower item id, reproducibly
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return Ranking(segment, order.tolist(), scores[order].tolist(), n_rounds, n_clicks)
