"""Contextual bandit policies: disjoint linear models per arm (Li et al. 2010).

Nothing here knows Kafka or HTTP. For every arm ``a`` a policy keeps the ridge
regression of rewards on contexts, A_a = ridge * I + sum x x^T and
b_a = sum r x, as the inverse A_a^{-1} (updated by Sherman-Morrison, O(d^2) per
reward) and the coefficients theta_a = A_a^{-1} b_a, so that choosing costs
O(K d^2) and never inverts a matrix.

Propensities (the probability the policy had of choosing the arm it chose, for
off-policy evaluation of the logs):

- ``EpsilonGreedyLinear``: exact, 1 - eps + eps/K for the greedy arm (ties
  split evenly), eps/K for the others.
- ``LinUCB``: exact, 1 / (number of arms tied for the best upper bound); ties
  (e.g. every arm before the first reward) are broken uniformly at random.
- ``LinearThompson`` (Agrawal & Goyal 2013): the arm maximising a posterior
  draw of its expected reward, N(theta_a.x, scale^2 x^T A_a^{-1} x), drawn
  independently per arm. P(arm a is best) has no closed form; it is computed
  by numerical integration, not Monte Carlo: with u = Phi(z),
  P(a) = integral_0^1 prod_{b != a} Phi((mu_a + sigma_a z - mu_b) / sigma_b) du,
  whose integrand is monotone in u from 0 to 1. The trapezoid rule on
  ``propensity_grid`` (G) equal steps in u therefore errs by at most 1 / (2G)
  (0.0005 at the default 1024), costs (K - 1) * G normal CDFs per decision, and
  never returns 0 or 1: the logged propensity is an estimate within that bound,
  so an arm with a true P(best) far below 1/(2G) is logged with too large a one
  (an IPS estimate then underweights such rare choices).

Randomness: every decision consumes the same amount of the generator (one
uniform for epsilon-greedy and LinUCB, K standard normals for Thompson), so
``choose_batch`` on n contexts makes exactly the decisions of n ``choose``
calls with the same generator and no update in between.

Checkpoints: ``snapshot()`` is plain lists and floats (msgpack/JSON) holding
the inverses themselves, so a restored policy makes bit-for-bit the decisions
the original would have made.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from rtml.shared.bandits.policies import PolicyError
from scipy import special

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

SNAPSHOT_VERSION = 1
DEFAULT_PROPENSITY_GRID = 1024
# special.ndtr(x) == 1.0 exactly in float64 for every x above this
_CDF_IS_ONE = 8.3


class ContextualPolicyError(PolicyError):
    """Invalid contextual policy configuration, context, reward or snapshot."""


@dataclass(frozen=True)
class ContextualDecision:
    arm: int  # index in range(n_arms)
    propensity: float  # P(this policy picks `arm` | context, state), in (0, 1]


class DecisionBatch(NamedTuple):
    arms: IntArray  # shape (n,)
    propensities: FloatArray  # shape (n,)


class ContextualPolicy(Protocol):
    n_arms: int
    dim: int

    def choose(self, context: FloatArray, rng: np.random.Generator) -> ContextualDecision: ...

    def update(self, arm: int, context: FloatArray, reward: float) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


class _Estimates(NamedTuple):
    means: FloatArray  # (n, K): theta_a . x
    variances: FloatArray  # (n, K): x^T A_a^{-1} x


class _LinearPolicy(ABC):
    """Per-arm ridge regressions, context checks and checkpoints shared by the policies."""

    name: ClassVar[str]

    def __init__(self, n_arms: int, dim: int, ridge: float) -> None:
        self.n_arms = _checked_count("n_arms", n_arms)
        self.dim = _checked_count("dim", dim)
        self.ridge = _checked_param("ridge", ridge, low=0.0, low_inclusive=False)
        self._inverse = np.broadcast_to(
            np.eye(self.dim) / self.ridge, (self.n_arms, self.dim, self.dim)
        ).copy()
        self._b = np.zeros((self.n_arms, self.dim))
        self._theta = np.zeros((self.n_arms, self.dim))
        self._pulls = np.zeros(self.n_arms, dtype=np.int64)

    # --- choosing ---------------------------------------------------------------

    def choose(self, context: FloatArray, rng: np.random.Generator) -> ContextualDecision:
        batch = self.choose_batch(self._checked_context(context)[None, :], rng)
        return ContextualDecision(int(batch.arms[0]), float(batch.propensities[0]))

    def choose_batch(self, contexts: FloatArray, rng: np.random.Generator) -> DecisionBatch:
        """Decisions for the rows of ``contexts`` (n, dim), with the state as it is now."""
        matrix = self._checked_contexts(contexts)
        return self._decide(matrix, self._estimates(matrix), rng)

    @abstractmethod
    def _decide(
        self, contexts: FloatArray, estimates: _Estimates, rng: np.random.Generator
    ) -> DecisionBatch:
        """Arms and propensities from the estimates, using a fixed amount of ``rng`` per row."""

    def _estimates(self, contexts: FloatArray) -> _Estimates:
        """theta_a . x and x^T A_a^{-1} x for every context and arm.

        Row by row, so every product has the same shape however many rows there are:
        BLAS picks its kernels by shape, and one (n, d) product may round differently
        from n (d,) ones, which would make a batch decide unlike single calls.
        """
        means = np.empty((len(contexts), self.n_arms))
        variances = np.empty_like(means)
        for row, x in enumerate(contexts):
            means[row] = self._theta @ x
            variances[row] = (self._inverse @ x) @ x
        # A^{-1} is positive definite: a tiny negative value is rounding
        return _Estimates(means, np.maximum(variances, 0.0))

    # --- learning ---------------------------------------------------------------

    def update(self, arm: int, context: FloatArray, reward: float) -> None:
        index = self._checked_arm(arm)
        x = self._checked_context(context)
        value = float(reward)
        if not math.isfinite(value):
            raise ContextualPolicyError(f"reward must be finite, got {reward!r}")
        inverse = self._inverse[index]
        projected = inverse @ x  # A^{-1} x
        # Sherman-Morrison, as a symmetric rank-one downdate so A^{-1} stays symmetric
        inverse -= np.outer(projected, projected) / (1.0 + float(projected @ x))
        self._b[index] += value * x
        self._pulls[index] += 1
        self._theta[index] = self._coefficients(index)

    def _coefficients(self, index: int) -> FloatArray:
        # the same call shape after an update and at a restore: the same rounding
        return self._inverse[index] @ self._b[index]

    def coefficients(self) -> FloatArray:
        """theta, shape (n_arms, dim): each arm's ridge estimate of the reward's coefficients."""
        return self._theta.copy()

    def inverse_gram(self) -> FloatArray:
        """A^{-1}, shape (n_arms, dim, dim)."""
        return self._inverse.copy()

    def pulls(self) -> npt.NDArray[np.int64]:
        """Rewards folded per arm."""
        return self._pulls.copy()

    # --- checkpoints ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "version": SNAPSHOT_VERSION,
            "n_arms": self.n_arms,
            "dim": self.dim,
            "params": self.params(),
            "pulls": self._pulls.tolist(),
            "inverse": self._inverse.tolist(),
            "b": self._b.tolist(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take a snapshot's learned state; parameters stay those this policy was built with."""
        if state.get("policy") != self.name:
            raise ContextualPolicyError(
                f"snapshot of policy {state.get('policy')!r}, not {self.name!r}"
            )
        if state.get("version") != SNAPSHOT_VERSION:
            raise ContextualPolicyError(f"snapshot version {state.get('version')!r} unsupported")
        if (state.get("n_arms"), state.get("dim")) != (self.n_arms, self.dim):
            raise ContextualPolicyError(
                f"snapshot has n_arms={state.get('n_arms')}, dim={state.get('dim')}; "
                f"this policy has n_arms={self.n_arms}, dim={self.dim}"
            )
        try:
            pulls = np.asarray(state["pulls"], dtype=np.int64)
            inverse = np.asarray(state["inverse"], dtype=np.float64)
            b = np.asarray(state["b"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ContextualPolicyError(f"malformed snapshot: {exc!r}") from None
        shapes = {
            "pulls": (pulls.shape, (self.n_arms,)),
            "inverse": (inverse.shape, (self.n_arms, self.dim, self.dim)),
            "b": (b.shape, (self.n_arms, self.dim)),
        }
        for key, (shape, expected) in shapes.items():
            if shape != expected:
                raise ContextualPolicyError(f"snapshot {key} has shape {shape}, not {expected}")
        if not (np.isfinite(inverse).all() and np.isfinite(b).all() and (pulls >= 0).all()):
            raise ContextualPolicyError("snapshot holds non-finite values or negative pulls")
        self._pulls, self._inverse, self._b = pulls, inverse, b
        self._theta = np.stack([self._coefficients(index) for index in range(self.n_arms)])

    def params(self) -> dict[str, float]:
        return {"ridge": self.ridge}

    # --- checks -----------------------------------------------------------------

    def _checked_arm(self, arm: int) -> int:
        if isinstance(arm, bool) or not isinstance(arm, int | np.integer):
            raise ContextualPolicyError(f"arm must be an integer, got {arm!r}")
        if not 0 <= arm < self.n_arms:
            raise ContextualPolicyError(f"arm must be in [0, {self.n_arms}), got {arm}")
        return int(arm)

    def _checked_context(self, context: FloatArray) -> FloatArray:
        x = np.asarray(context, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ContextualPolicyError(f"context must have shape ({self.dim},), got {x.shape}")
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x)).tolist()
            raise ContextualPolicyError(f"context has non-finite values at indices {bad}")
        return x

    def _checked_contexts(self, contexts: FloatArray) -> FloatArray:
        matrix = np.asarray(contexts, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ContextualPolicyError(
                f"contexts must have shape (n, {self.dim}), got {matrix.shape}"
            )
        if not np.isfinite(matrix).all():
            rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1)).tolist()
            raise ContextualPolicyError(f"contexts have non-finite values in rows {rows}")
        return matrix


def _pick_by_probability(probabilities: FloatArray, uniforms: FloatArray) -> IntArray:
    """Row-wise inverse-CDF draw; an arm with probability 0 is never picked."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    picks = (cumulative <= uniforms[:, None]).sum(axis=1)
    # a zero-probability arm after the last positive one could be reached through rounding
    last_positive = probabilities.shape[1] - 1 - np.argmax(probabilities[:, ::-1] > 0, axis=1)
    return np.minimum(picks, last_positive)


def _share_among_best(scores: FloatArray) -> FloatArray:
    """Row-wise: all probability on the largest score, split evenly among exact ties."""
    best = scores == scores.max(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True)


class EpsilonGreedyLinear(_LinearPolicy):
    """The arm with the best estimate theta_a . x with probability 1 - eps, any arm otherwise."""

    name = "epsilon_greedy_linear"

    def __init__(self, n_arms: int, dim: int, epsilon: float = 0.1, ridge: float = 1.0) -> None:
        super().__init__(n_arms, dim, ridge)
        self.epsilon = _checked_param("epsilon", epsilon, low=0.0, high=1.0)

    def probabilities(self, contexts: FloatArray) -> FloatArray:
        """The exact choice probabilities, shape (n, n_arms), for the rows of ``contexts``."""
        means = self._estimates(self._checked_contexts(contexts)).means
        return self._probabilities(means)

    def _probabilities(self, means: FloatArray) -> FloatArray:
        return self.epsilon / self.n_arms + (1.0 - self.epsilon) * _share_among_best(means)

    def _decide(
        self, contexts: FloatArray, estimates: _Estimates, rng: np.random.Generator
    ) -> DecisionBatch:
        probabilities = self._probabilities(estimates.means)
        arms = _pick_by_probability(probabilities, rng.random(len(contexts)))
        return DecisionBatch(arms, probabilities[np.arange(len(arms)), arms])

    def params(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "ridge": self.ridge}


class LinUCB(_LinearPolicy):
    """The arm with the largest upper bound theta_a . x + alpha sqrt(x^T A_a^{-1} x)."""

    name = "linucb"

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, ridge: float = 1.0) -> None:
        super().__init__(n_arms, dim, ridge)
        self.alpha = _checked_param("alpha", alpha, low=0.0)

    def upper_bounds(self, contexts: FloatArray) -> FloatArray:
        estimates = self._estimates(self._checked_contexts(contexts))
        return self._upper_bounds(estimates)

    def _upper_bounds(self, estimates: _Estimates) -> FloatArray:
        return estimates.means + self.alpha * np.sqrt(estimates.variances)

    def _decide(
        self, contexts: FloatArray, estimates: _Estimates, rng: np.random.Generator
    ) -> DecisionBatch:
        probabilities = _share_among_best(self._upper_bounds(estimates))
        arms = _pick_by_probability(probabilities, rng.random(len(contexts)))
        return DecisionBatch(arms, probabilities[np.arange(len(arms)), arms])

    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "ridge": self.ridge}


class LinearThompson(_LinearPolicy):
    """The arm maximising a draw from N(theta_a . x, scale^2 x^T A_a^{-1} x), per arm.

    Only the scalar theta_a . x enters the choice, so drawing it directly is the
    same in distribution as drawing theta_a ~ N(theta_hat_a, scale^2 A_a^{-1}), and
    costs one normal per arm instead of a d-dimensional draw.
    """

    name = "linear_ts"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        scale: float = 0.25,
        ridge: float = 1.0,
        *,
        propensity_grid: int = DEFAULT_PROPENSITY_GRID,
    ) -> None:
        super().__init__(n_arms, dim, ridge)
        self.scale = _checked_param("scale", scale, low=0.0, low_inclusive=False)
        self.propensity_grid = _checked_count("propensity_grid", propensity_grid)
        # the interior grid points u = i/G, i = 1..G-1, as standard normal quantiles
        self._grid_z = special.ndtri(np.arange(1, self.propensity_grid) / self.propensity_grid)

    @property
    def propensity_error_bound(self) -> float:
        return 0.5 / self.propensity_grid

    def _decide(
        self, contexts: FloatArray, estimates: _Estimates, rng: np.random.Generator
    ) -> DecisionBatch:
        normals = rng.standard_normal((len(contexts), self.n_arms))
        stddevs = self.scale * np.sqrt(estimates.variances)
        arms = np.argmax(estimates.means + stddevs * normals, axis=1)
        propensities = np.array(
            [
                self._p_best(int(arm), means, sigmas)
                for arm, means, sigmas in zip(arms, estimates.means, stddevs, strict=True)
            ]
        )
        return DecisionBatch(arms, propensities)

    def p_best(self, context: FloatArray) -> FloatArray:
        """P(each arm is chosen) for one context, each within ``propensity_error_bound``."""
        x = self._checked_context(context)[None, :]
        estimates = self._estimates(x)
        stddevs = self.scale * np.sqrt(estimates.variances[0])
        return np.array([self._p_best(a, estimates.means[0], stddevs) for a in range(self.n_arms)])

    def _p_best(self, arm: int, means: FloatArray, stddevs: FloatArray) -> float:
        if self.n_arms == 1:
            return 1.0
        if not stddevs.any():
            # a zero context: every arm's draw is 0, argmax takes the first
            return 1.0 if arm == 0 else 0.0
        draws = means[arm] + stddevs[arm] * self._grid_z
        # an arm whose CDF is 1.0 in float64 even at the lowest draw multiplies by exactly 1:
        # skipping it changes nothing and spares most arms once the policy has learned
        lowest = (draws[0] - means) / np.where(stddevs > 0.0, stddevs, 1.0)
        others = (lowest < _CDF_IS_ONE) | (stddevs == 0.0)
        others[arm] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            # an arm with no spread (a context of ~0) is a step: ndtr(+-inf) is 1 or 0
            standardised = (draws[:, None] - means[None, others]) / stddevs[None, others]
        integrand = special.ndtr(standardised).prod(axis=1)
        # trapezoid in u with f(0) = 0 and f(1) = 1 at the ends
        return float((integrand.sum() + 0.5) / self.propensity_grid)

    def params(self) -> dict[str, float]:
        return {"scale": self.scale, "ridge": self.ridge, "propensity_grid": self.propensity_grid}


# --- construction --------------------------------------------------------------

_POLICIES: dict[str, type[_LinearPolicy]] = {
    policy.name: policy for policy in (EpsilonGreedyLinear, LinUCB, LinearThompson)
}
CONTEXTUAL_POLICY_NAMES = tuple(_POLICIES)


def make_contextual_policy(name: str, n_arms: int, dim: int, **params: float) -> ContextualPolicy:
    """Build a contextual policy by its configuration name."""
    policy_class = _POLICIES.get(name)
    if policy_class is None:
        choices = ", ".join(CONTEXTUAL_POLICY_NAMES)
        raise ContextualPolicyError(f"unknown contextual policy {name!r}; choose one of {choices}")
    try:
        inspect.signature(policy_class).bind(n_arms, dim, **params)
    except TypeError as exc:
        raise ContextualPolicyError(f"{name}: {exc}") from None
    return policy_class(n_arms, dim, **params)


def contextual_policy_from_snapshot(state: Mapping[str, Any]) -> ContextualPolicy:
    """Rebuild a policy exactly (parameters and learned state) from ``snapshot()``."""
    try:
        policy = make_contextual_policy(
            state["policy"], state["n_arms"], state["dim"], **state["params"]
        )
    except (KeyError, TypeError) as exc:
        raise ContextualPolicyError(f"malformed snapshot: {exc!r}") from None
    policy.restore(state)
    return policy


def _checked_count(name: str, value: float) -> int:
    # configuration may come through JSON or **params: float, so 3.0 counts as 3
    integral = isinstance(value, int | np.integer) or (
        isinstance(value, float) and value.is_integer()
    )
    if isinstance(value, bool) or not integral or value < 1:
        raise ContextualPolicyError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _checked_param(
    name: str,
    value: float,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_inclusive: bool = True,
) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ContextualPolicyError(f"{name} must be a number, got {value!r}") from None
    above_low = number >= low if low_inclusive else number > low
    if not (math.isfinite(number) and above_low and number <= high):
        bound = f"{'>=' if low_inclusive else '>'} {low}"
        if math.isfinite(high):
            bound += f" and <= {high}"
        raise ContextualPolicyError(f"{name} must be finite and {bound}, got {value!r}")
    return number
