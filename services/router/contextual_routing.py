"""Contextual routing of a task whose arms are items: pure, no I/O.

The arms are the task's items ``0 .. n_items - 1`` (``ItemArms`` of its spec),
named by their id as a string (the collector joins a label to a recommendation
on that name). The context of a request is built from its feature vector:

    [1, one-hot(categorical feature 1), ..., one-hot(categorical feature k), numeric features]

(say a user's categorical features, then their session's mean item embedding). The leading 1
gives every arm an intercept (a request with unknown categorical features and
zero numeric ones is all zeros otherwise). A categorical feature is a category
code; a code outside ``0 .. size - 1`` (e.g. the default -1 of a request that
did not give it) leaves its block all zeros.

Learning: a reward carries the feature vector its decision was made with
(``Reward.features``, filled by the collector from the prediction), so the
context is rebuilt from the reward alone. Each reward is therefore folded
exactly once through the router's ledger like any other, every replica folds
the same contexts, and a restart folds the rewards after its checkpoint from
the log. A reward without features cannot be folded (``MissingContext``).

Checkpoints stay below the message size limit by holding A^{-1} as the float32
upper triangle (a relative rounding of 6e-8 at a restart; decisions differ from
an uninterrupted router's only where two arms' scores are closer than that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rtml.shared.bandits.contextual import (
    CONTEXTUAL_POLICY_NAMES,
    ContextualPolicy,
    ContextualPolicyError,
    FloatArray,
    make_contextual_policy,
)
from rtml.shared.bandits.policies import UnknownArm
from rtml.shared.contracts import (
    MAX_MESSAGE_BYTES,
    ArmSummary,
    FeatureVector,
    PredictEnriched,
    PredictRouted,
    Reward,
)
from rtml.shared.tasks.spec import ItemArms
from scipy import special

PACKED_SNAPSHOT_VERSION = 1
_Z95 = float(special.ndtri(0.975))


class MissingContext(ContextualPolicyError):
    """A request or reward without the features its context is built from."""


def is_contextual(policy: str) -> bool:
    return policy in CONTEXTUAL_POLICY_NAMES


@dataclass(frozen=True)
class ContextSpec:
    n_items: int
    # the one-hot encoded features and their category counts, then the numeric features
    categorical: tuple[str, ...]
    categories: tuple[int, ...]
    numeric: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.categorical):
            raise ContextualPolicyError(
                f"{len(self.categorical)} categorical features need as many category counts, "
                f"got {list(self.categories)}"
            )
        if any(size < 1 for size in self.categories):
            raise ContextualPolicyError(
                f"category counts must be >= 1, got {list(self.categories)}"
            )

    @classmethod
    def of(cls, items: ItemArms) -> ContextSpec:
        return cls(items.count, items.categorical, items.categories, items.numeric)

    @property
    def dim(self) -> int:
        return 1 + sum(self.categories) + len(self.numeric)


class ContextEncoder:
    """Feature vector -> context vector (see the module doc)."""

    def __init__(self, spec: ContextSpec) -> None:
        self.spec = spec
        self._sizes = np.array(spec.categories)
        # where each categorical feature's block starts in the context
        self._offsets = 1 + np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.intp)
        # every vector of a feature set has the same names: look their positions up once
        self._positions: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}

    def encode(self, features: FeatureVector) -> FloatArray:
        categorical, numeric = self._lookup(tuple(features.names))
        values = np.asarray(features.values, dtype=np.float64)
        context = np.zeros(self.spec.dim)
        context[0] = 1.0
        codes = values[categorical]
        known = (codes == np.floor(codes)) & (codes >= 0) & (codes < self._sizes)
        context[(self._offsets[known] + codes[known]).astype(np.intp)] = 1.0
        if numeric:
            context[-len(numeric) :] = values[numeric]
        return context

    def _lookup(self, names: tuple[str, ...]) -> tuple[list[int], list[int]]:
        positions = self._positions.get(names)
        if positions is None:
            index = {name: position for position, name in enumerate(names)}
            wanted = (*self.spec.categorical, *self.spec.numeric)
            missing = [n for n in wanted if n not in index]
            if missing:
                raise MissingContext(f"features lack {missing[:5]} ({len(missing)} missing)")
            positions = (
                [index[n] for n in self.spec.categorical],
                [index[n] for n in self.spec.numeric],
            )
            if len(self._positions) < 16:
                self._positions[names] = positions
        return positions


@dataclass
class _ArmStats:
    """Per item: decisions taken and the rewards' count, sum and squared deviations (Welford)."""

    decisions: list[int]
    rewards: list[int]
    total: list[float]
    m2: list[float]

    @classmethod
    def empty(cls, n: int) -> _ArmStats:
        return cls([0] * n, [0] * n, [0.0] * n, [0.0] * n)

    def record(self, arm: int, reward: float) -> None:
        previous = self.total[arm] / self.rewards[arm] if self.rewards[arm] else 0.0
        self.rewards[arm] += 1
        self.total[arm] += reward
        self.m2[arm] += (reward - previous) * (reward - self.total[arm] / self.rewards[arm])

    def summary(self, arm: int, share: float) -> ArmSummary:
        n = self.rewards[arm]
        mean = self.total[arm] / n if n else math.nan
        half = _Z95 * math.sqrt(self.m2[arm] / (n - 1) / n) if n >= 2 else math.nan
        return ArmSummary(
            arm=str(arm), pulls=n, mean=mean, ci_low=mean - half, ci_high=mean + half, share=share
        )


@dataclass
class ContextualArms:
    """One task's contextual policy over items, with its encoder and per-item statistics."""

    policy_name: str
    params: Mapping[str, Any]
    spec: ContextSpec
    policy: ContextualPolicy = field(init=False)
    encoder: ContextEncoder = field(init=False)
    stats: _ArmStats = field(init=False)

    def __post_init__(self) -> None:
        self.policy = make_contextual_policy(
            self.policy_name, self.spec.n_items, self.spec.dim, **self.params
        )
        self.encoder = ContextEncoder(self.spec)
        self.stats = _ArmStats.empty(self.spec.n_items)
        size = packed_size_bytes(self.spec)
        if size > MAX_MESSAGE_BYTES * 0.9:
            raise ContextualPolicyError(
                f"a checkpoint of {self.spec.n_items} items x {self.spec.dim} dimensions would "
                f"take ~{size} bytes, over the {MAX_MESSAGE_BYTES}-byte message limit"
            )

    @property
    def name(self) -> str:
        return self.policy_name

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(str(item) for item in range(self.spec.n_items))

    def route(
        self, enriched: PredictEnriched, fields: Mapping[str, Any], rng: np.random.Generator
    ) -> PredictRouted:
        decision = self.policy.choose(self.encoder.encode(enriched.features), rng)
        self.stats.decisions[decision.arm] += 1
        # no model version: the prediction service's champion scores the chosen item
        return PredictRouted(
            **fields,
            arm=str(decision.arm),
            propensity=decision.propensity,
            policy=self.policy_name,
        )

    def update(self, reward: Reward) -> None:
        """Fold one reward; UnknownArm for an arm that is not an item, MissingContext
        for a reward without the features of its decision."""
        arm = item_of(reward.arm, self.spec.n_items)
        if reward.features is None:
            raise MissingContext(f"reward {reward.id} carries no features to learn from")
        self.policy.update(arm, self.encoder.encode(reward.features), reward.reward)
        self.stats.record(arm, float(reward.reward))

    def summaries(self) -> list[ArmSummary]:
        decided = sum(self.stats.decisions)
        n = self.spec.n_items
        return [
            self.stats.summary(arm, self.stats.decisions[arm] / decided if decided else 1.0 / n)
            for arm in range(n)
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            **pack(self.policy.snapshot()),
            "stats": {
                "decisions": list(self.stats.decisions),
                "rewards": list(self.stats.rewards),
                "total": list(self.stats.total),
                "m2": list(self.stats.m2),
            },
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        try:
            stats = _ArmStats(**{key: list(snapshot["stats"][key]) for key in _STAT_KEYS})
        except (KeyError, TypeError) as exc:
            raise ContextualPolicyError(f"malformed snapshot stats: {exc!r}") from None
        if any(len(column) != self.spec.n_items for column in vars(stats).values()):
            raise ContextualPolicyError(f"snapshot stats are not of {self.spec.n_items} items")
        self.policy.restore(unpack(snapshot))
        self.stats = stats


_STAT_KEYS = ("decisions", "rewards", "total", "m2")


def item_of(arm: str, n_items: int) -> int:
    # exactly the names routing gives ("7", never "07"): anything else is not an item
    if not (arm.isascii() and arm.isdigit() and str(int(arm)) == arm and int(arm) < n_items):
        raise UnknownArm(f"arm {arm!r} is not an item id in [0, {n_items})")
    return int(arm)


def packed_size_bytes(spec: ContextSpec) -> int:
    """About what a checkpoint of ``spec`` takes: the float32 triangles, b and the stats
    as msgpack floats, and an ArmSummary per item."""
    n, d = spec.n_items, spec.dim
    return n * d * (d + 1) // 2 * 4 + n * d * 9 + n * (4 * 9 + 120)


def pack(state: Mapping[str, Any]) -> dict[str, Any]:
    """A contextual policy snapshot with A^{-1} as float32 upper-triangle bytes."""
    inverse = np.asarray(state["inverse"])
    rows, columns = np.triu_indices(inverse.shape[-1])
    packed = {key: value for key, value in state.items() if key != "inverse"}
    packed["packed"] = PACKED_SNAPSHOT_VERSION
    packed["inverse_upper_f32"] = inverse[:, rows, columns].astype("<f4").tobytes()
    return packed


def unpack(packed: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot ``pack`` packed, A^{-1} back as a symmetric float64 array."""
    if packed.get("packed") != PACKED_SNAPSHOT_VERSION:
        raise ContextualPolicyError(f"snapshot packing {packed.get('packed')!r} unsupported")
    try:
        n_arms, dim = int(packed["n_arms"]), int(packed["dim"])
        upper = np.frombuffer(packed["inverse_upper_f32"], dtype="<f4").astype(np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ContextualPolicyError(f"malformed snapshot: {exc!r}") from None
    rows, columns = np.triu_indices(dim)
    if upper.size != n_arms * len(rows):
        raise ContextualPolicyError(
            f"snapshot holds {upper.size} inverse values, not {n_arms * len(rows)}"
        )
    inverse = np.zeros((n_arms, dim, dim))
    inverse[:, rows, columns] = upper.reshape(n_arms, -1)
    inverse[:, columns, rows] = upper.reshape(n_arms, -1)
    state = {
        key: value
        for key, value in packed.items()
        if key not in ("packed", "inverse_upper_f32", "stats")
    }
    return {**state, "inverse": inverse}
