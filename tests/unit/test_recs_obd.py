"""The OBD loader on the real sample installed with rtml (rtml/tasks/recs/data)."""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
import pytest
from rtml.shared.contracts import decode, encode

from rtml.tasks.recs.events import Impression, ItemClicked
from rtml.tasks.recs.obd import (
    BEHAVIOURS,
    CAMPAIGNS,
    SAMPLE,
    UserFeatureEncoder,
    contexts,
    load_rounds,
    open_csv,
    to_events,
)

# items per campaign, as the dataset's documentation gives them
N_ITEMS = {"all": 80, "men": 34, "women": 46}


def csv_rows(behaviour: str, campaign: str) -> list[dict[str, str]]:
    with open_csv(behaviour, campaign, campaign) as handle:
        return list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8")))


def test_the_sample_is_the_obp_wheels_csvs_unchanged() -> None:
    """Every file SHA256SUMS names (the CSVs as obp 0.4.1 ships them) decompresses to
    the same bytes, and every campaign of both policies is there."""
    sums = dict(reversed(line.split()) for line in (SAMPLE / "SHA256SUMS").read_text().splitlines())
    expected = {f"{b}/{c}/{c}.csv" for b in BEHAVIOURS for c in CAMPAIGNS}
    expected |= {f"random/{c}/item_context.csv" for c in CAMPAIGNS}
    assert set(sums) == expected
    for name, digest in sums.items():
        behaviour, campaign, file = name.split("/")
        with open_csv(behaviour, campaign, file.removesuffix(".csv")) as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name


@pytest.mark.parametrize("campaign", CAMPAIGNS)
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_rounds_and_clicks_equal_the_csv(campaign, behaviour):
    log = load_rounds(campaign, behaviour)
    rows = csv_rows(behaviour, campaign)
    assert log.n_rounds == len(rows) == 10_000
    assert log.n_items == N_ITEMS[campaign]
    assert log.n_clicks == sum(row["click"] == "1" for row in rows) > 0
    assert log.ctr == pytest.approx(log.n_clicks / len(rows))
    assert set(np.unique(log.positions)) == {1, 2, 3}
    assert log.affinities.shape == (10_000, N_ITEMS[campaign])
    assert int(log.items.max()) < log.n_items
    assert list(log.timestamps) == sorted(log.timestamps)


@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_the_random_policy_is_uniform_over_the_items(campaign):
    log = load_rounds(campaign, "random")
    assert np.allclose(log.propensities, 1.0 / log.n_items)
    # every item is shown, each roughly 1/n_items of the time
    shown = np.bincount(log.items, minlength=log.n_items)
    assert shown.min() > 0.5 * log.n_rounds / log.n_items


def test_bts_propensities_are_probabilities_but_not_uniform():
    log = load_rounds("all", "bts")
    assert ((log.propensities > 0) & (log.propensities <= 1)).all()
    assert len(np.unique(log.propensities)) > 100


def test_the_arrays_are_read_only():
    log = load_rounds("men", "random")
    with pytest.raises(ValueError):
        log.clicks[0] = 1


def test_one_hot_user_features_have_one_category_per_column():
    encoder = UserFeatureEncoder.of_campaign("all")
    log = load_rounds("all", "random")
    codes = encoder.code_matrix(log.user_features)
    one_hot = encoder.one_hot(codes)
    assert one_hot.shape == (log.n_rounds, encoder.dim)
    assert (one_hot.sum(axis=1) == 4).all()
    assert [len(values) for values in encoder.categories][:2] == [3, 5]
    first = [str(value) for value in log.user_features[0]]
    assert encoder.codes(first) == tuple(codes[0])


def test_an_unseen_user_feature_encodes_as_a_zero_block():
    encoder = UserFeatureEncoder.fit(load_rounds("women", "random"))
    known = [str(value) for value in load_rounds("women", "random").user_features[0]]
    codes = encoder.codes(["never-seen", *known[1:]])
    assert codes[0] == -1
    row = encoder.one_hot(np.array([codes]))[0]
    assert row[: len(encoder.categories[0])].sum() == 0
    assert row.sum() == 3


def test_contexts_end_with_the_position_one_hot():
    encoder = UserFeatureEncoder.of_campaign("men")
    log = load_rounds("men", "random")
    matrix = contexts(log, encoder)
    assert matrix.shape == (log.n_rounds, encoder.dim + 3)
    assert (np.argmax(matrix[:, -3:], axis=1) + 1 == log.positions).all()


def test_rounds_become_impressions_and_clicks():
    log = load_rounds("women", "random")
    events = list(to_events(log))
    impressions = [e for e in events if isinstance(e, Impression)]
    clicks = [e for e in events if isinstance(e, ItemClicked)]
    assert len(impressions) == log.n_rounds
    assert len(clicks) == log.n_clicks
    by_id = {i.id: i for i in impressions}
    for click in clicks:
        shown = by_id[click.impression_id]
        assert (click.session_id, click.item_id, click.ts) == (
            shown.session_id,
            shown.item_id,
            shown.ts,
        )
    first = impressions[0]
    assert first.propensity == pytest.approx(1 / 46)
    assert first.position == log.positions[0]
    assert first.user_features["user_feature_0"] == log.user_features[0, 0]
    assert decode(encode(first)) == first
    # stable ids: a second conversion gives the same events
    assert [e.id for e in to_events(log)][:10] == [e.id for e in events][:10]
