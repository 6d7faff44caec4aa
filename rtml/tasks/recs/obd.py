"""The Open Bandit Dataset sample, as arrays, rtml events and context matrices.

The sample (``data/``: the CSVs of the obp 0.4.1 wheel, gzip-compressed, with their
provenance and licence in ``data/README.md``) holds 10,000 rounds of ZOZOTOWN's fashion
recommendations per behaviour policy -- ``random`` (uniform over the campaign's items)
and ``bts`` (Bernoulli Thompson sampling) -- and campaign (``all``, ``men``, ``women``).
It is installed with rtml and read with pyarrow's CSV reader.

One round is one logged impression: the item shown, its slot (``position`` 1..3, as
logged), the click, the behaviour policy's propensity of that item, four hashed
categorical user features, and one user-item affinity per item. The data have no user or
session ids, so every round is its own session (``obd-<behaviour>-<campaign>-<round>``).

User features: each ``user_feature_i`` is a hash naming a category. A feature value's
*code* is its index among the column's categories seen in the campaign's random and bts
logs, sorted (-1 if never seen); recs requests carry codes as ``inputs["user_feature_i"]``
because request inputs are numbers. The one-hot encoding has one 0/1 column per category
of each column; an unseen value is all zeros in its column's block.

Contexts for the contextual policies are the user one-hot followed by a one-hot of the
position. The affinities are loaded but left out of the contexts: in the random ``all``
log 502 of its 800,000 values are non-zero.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib.abc import Traversable
from importlib.resources import files
from typing import IO, Literal

import numpy as np
import pyarrow
import pyarrow.csv

from rtml.shared.contracts import Message
from rtml.tasks.recs.events import Impression, ItemClicked

Campaign = Literal["all", "men", "women"]
Behaviour = Literal["random", "bts"]
CAMPAIGNS: tuple[Campaign, ...] = ("all", "men", "women")
BEHAVIOURS: tuple[Behaviour, ...] = ("random", "bts")
USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
# ZOZOTOWN shows three recommendations at a time
POSITIONS = (1, 2, 3)


SAMPLE: Traversable = files("rtml.tasks.recs") / "data" / "obd"


@contextmanager
def open_csv(behaviour: Behaviour, campaign: Campaign, name: str) -> Iterator[IO[bytes]]:
    """``<behaviour>/<campaign>/<name>.csv`` of the sample, decompressed as it is read."""
    with (SAMPLE / behaviour / campaign / f"{name}.csv.gz").open("rb") as packed:
        with gzip.open(packed) as handle:
            yield handle


@dataclass(frozen=True)
class LoggedRounds:
    """One campaign's log under one behaviour policy, column by column (read-only arrays)."""

    campaign: Campaign
    behaviour: Behaviour
    n_items: int
    timestamps: np.ndarray  # event time, epoch seconds
    items: np.ndarray
    positions: np.ndarray
    clicks: np.ndarray
    propensities: np.ndarray
    user_features: np.ndarray  # (rounds, 4) of hash strings
    affinities: np.ndarray  # (rounds, n_items)

    @property
    def n_rounds(self) -> int:
        return len(self.items)

    @property
    def n_clicks(self) -> int:
        return int(self.clicks.sum())

    @property
    def ctr(self) -> float:
        return float(self.clicks.mean())

    def session_id(self, index: int) -> str:
        return f"obd-{self.behaviour}-{self.campaign}-{index}"


@lru_cache(maxsize=len(CAMPAIGNS) * len(BEHAVIOURS))
def load_rounds(campaign: Campaign, behaviour: Behaviour = "random") -> LoggedRounds:
    """The logged rounds, in log order; cached (the arrays are read-only)."""
    if campaign not in CAMPAIGNS or behaviour not in BEHAVIOURS:
        raise ValueError(f"no OBD log for campaign={campaign!r}, behaviour={behaviour!r}")
    with open_csv(behaviour, campaign, campaign) as handle:
        table = pyarrow.csv.read_csv(handle)
    n_items = len(item_context_rows(campaign))

    def column(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    arrays = dict(
        # pyarrow parses the ISO timestamps with their UTC offset to nanoseconds
        timestamps=table.column("timestamp").cast(pyarrow.int64()).to_numpy() / 1e9,
        items=column("item_id").astype(np.int64),
        positions=column("position").astype(np.int64),
        clicks=column("click").astype(np.int64),
        propensities=column("propensity_score").astype(np.float64),
        user_features=np.stack([column(name) for name in USER_FEATURES], axis=1),
        affinities=np.stack(
            [column(f"user-item_affinity_{item}") for item in range(n_items)], axis=1
        ).astype(np.float64),
    )
    for array in arrays.values():
        array.flags.writeable = False
    return LoggedRounds(campaign=campaign, behaviour=behaviour, n_items=n_items, **arrays)


@lru_cache(maxsize=len(CAMPAIGNS))
def item_context_rows(campaign: Campaign) -> tuple[dict[str, str], ...]:
    """The campaign's item_context.csv rows, by item id (the random log's copy: the bts
    log's hashes the categorical features differently, and nothing here mixes them)."""
    with open_csv("random", campaign, "item_context") as handle:
        rows = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8"))
        return tuple(sorted(rows, key=lambda row: int(row["item_id"])))


@dataclass(frozen=True)
class UserFeatureEncoder:
    """Codes and one-hot encoding of the hashed user features (see the module doc)."""

    categories: tuple[tuple[str, ...], ...]

    @classmethod
    def fit(cls, *logs: LoggedRounds) -> UserFeatureEncoder:
        return cls(
            tuple(
                tuple(sorted({str(v) for log in logs for v in log.user_features[:, column]}))
                for column in range(len(USER_FEATURES))
            )
        )

    @classmethod
    def of_campaign(cls, campaign: Campaign) -> UserFeatureEncoder:
        return cls.fit(*(load_rounds(campaign, behaviour) for behaviour in BEHAVIOURS))

    @property
    def dim(self) -> int:
        return sum(len(values) for values in self.categories)

    def codes(self, user_features: Sequence[str]) -> tuple[int, ...]:
        return tuple(
            values.index(value) if value in values else -1
            for values, value in zip(self.categories, user_features, strict=True)
        )

    def code_matrix(self, user_features: np.ndarray) -> np.ndarray:
        """(rounds, 4) codes of a (rounds, 4) array of hashes."""
        lookup = [{value: code for code, value in enumerate(v)} for v in self.categories]
        return np.array(
            [[lookup[c].get(value, -1) for c, value in enumerate(row)] for row in user_features],
            dtype=np.int64,
        ).reshape(len(user_features), len(self.categories))

    def one_hot(self, codes: np.ndarray) -> np.ndarray:
        """(rounds, dim) one-hot of a (rounds, 4) code matrix; code -1 gives a zero block."""
        blocks = []
        for column, values in enumerate(self.categories):
            block = np.zeros((len(codes), len(values)))
            known = codes[:, column] >= 0
            block[np.flatnonzero(known), codes[known, column]] = 1.0
            blocks.append(block)
        return np.hstack(blocks)


def contexts(log: LoggedRounds, encoder: UserFeatureEncoder) -> np.ndarray:
    """(rounds, encoder.dim + 3): the user one-hot, then the position one-hot."""
    positions = np.zeros((log.n_rounds, len(POSITIONS)))
    positions[np.arange(log.n_rounds), log.positions - POSITIONS[0]] = 1.0
    return np.hstack([encoder.one_hot(encoder.code_matrix(log.user_features)), positions])


def to_events(log: LoggedRounds) -> Iterator[Message]:
    """Each round as an ``impression`` and, if clicked, an ``item_clicked`` at the same
    event time (the log does not say when the click came); ids are stable, so a replay
    of the same log is recognisable as one."""
    for index in range(log.n_rounds):
        session_id = log.session_id(index)
        impression = Impression(
            id=f"{session_id}-impression",
            ts=float(log.timestamps[index]),
            session_id=session_id,
            item_id=int(log.items[index]),
            position=int(log.positions[index]),
            campaign=log.campaign,
            propensity=float(log.propensities[index]),
            user_features=dict(zip(USER_FEATURES, map(str, log.user_features[index]), strict=True)),
        )
        yield impression
        if log.clicks[index]:
            yield ItemClicked(
                id=f"{session_id}-click",
                ts=impression.ts,
                session_id=session_id,
                item_id=impression.item_id,
                impression_id=impression.id,
            )
