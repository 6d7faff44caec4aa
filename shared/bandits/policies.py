"""Routing policies over arms (model version ids): the pure math of the bandit router.

Nothing here knows Kafka or HTTP. A policy chooses an arm with ``choose(rng)``,
learns from ``update(arm, reward)``, gains and loses arms as versions are
announced and retired, and checkpoints itself with ``snapshot()`` /
``restore()`` as plain JSON/msgpack data.

Propensities. ``choose`` draws the arm from ``probabilities()``, so the
propensity logged with a decision is exactly the probability the policy used,
and inverse-propensity estimates built on those logs stay unbiased.

Thompson sampling. Drawing one posterior sample per arm and routing to the
largest is the same as routing to each arm with its probability of being best,
P(best). The Thompson policies estimate P(best) by Monte Carlo with
``mc_draws`` joint posterior draws (10,000 by default: a standard error of at
most 0.005 per arm) from a generator seeded with ``mc_seed`` on every refresh,
then route by that estimate (probability matching, as Google Analytics did).
The estimate is therefore a deterministic function of the posterior: replicas
and restarted routers holding the same posterior route with the same
probabilities, and the propensity is exact rather than itself an estimate.
Two costs of that choice: re-estimating after a reward takes about 3.5 ms for
three arms at the default draws (lower ``mc_draws`` when rewards arrive faster),
and an arm whose P(best) is below about 1/mc_draws gets no traffic at all (give
arms that must keep learning a ``min_share``).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, TypedDict

import numpy as np
from numpy.typing import NDArray
from rtml.shared.errors import RtmlError
from scipy import stats

Arm = str
FloatArray = NDArray[np.float64]

SNAPSHOT_VERSION = 1
_Z95 = float(stats.norm.ppf(0.975))


class PolicyError(RtmlError):
    """Invalid policy configuration, reward or snapshot."""


class UnknownArm(PolicyError):
    """A reward for an arm the policy does not have (e.g. a late reward for a retired version)."""


@dataclass(frozen=True, slots=True)
class Decision:
    arm: Arm
    propensity: float


class ArmSummary(TypedDict):
    pulls: int
    mean: float
    ci_low: float
    ci_high: float


class Policy(Protocol):
    name: ClassVar[str]

    @property
    def arms(self) -> tuple[Arm, ...]: ...

    def choose(self, rng: np.random.Generator) -> Decision: ...

    def probabilities(self) -> dict[Arm, float]: ...

    def update(self, arm: Arm, reward: float) -> None: ...

    def add_arm(
        self, arm: Arm, *, min_share: float = 0.0, min_pulls: int = 0, **prior: float
    ) -> None: ...

    def remove_arm(self, arm: Arm) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...

    def summary(self) -> dict[Arm, ArmSummary]: ...


class BayesianPolicy(Policy, Protocol):
    def posterior_draws(self, n: int, rng: np.random.Generator) -> FloatArray:
        """Joint draws of the arms' mean rewards, shape (n, len(arms)), in ``arms`` order."""
        ...


@dataclass(slots=True)
class _ArmState:
    prior: dict[str, float]
    # exploration floor: the arm gets at least min_share of traffic until it has min_pulls rewards
    min_share: float
    min_pulls: int
    pulls: int = 0
    total: float = 0.0
    # sum of squared deviations from the running mean (Welford), for variances without cancellation
    m2: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.pulls if self.pulls else math.nan

    @property
    def floor(self) -> float:
        return self.min_share if self.pulls < self.min_pulls else 0.0

    def record(self, reward: float) -> None:
        previous_mean = self.mean if self.pulls else 0.0
        self.pulls += 1
        self.total += reward
        self.m2 += (reward - previous_mean) * (reward - self.mean)


@dataclass(frozen=True, slots=True)
class _Routing:
    arms: tuple[Arm, ...]
    probabilities: FloatArray
    # indices and cumulative probabilities of the arms that can be chosen at all, so an arm
    # with probability 0 is never drawn through rounding (its propensity would be 0)
    support: NDArray[np.intp]
    cumulative: FloatArray


class _BasePolicy(ABC):
    """Per-arm statistics, exploration floors, routing and checkpoints shared by every policy."""

    name: ClassVar[str]
    _prior_defaults: ClassVar[dict[str, float]] = {}

    def __init__(self) -> None:
        self._arms: dict[Arm, _ArmState] = {}
        self._routing: _Routing | None = None

    @property
    def arms(self) -> tuple[Arm, ...]:
        return tuple(self._arms)

    def add_arm(
        self, arm: Arm, *, min_share: float = 0.0, min_pulls: int = 0, **prior: float
    ) -> None:
        """Add an arm; adding an existing arm again keeps its statistics untouched.

        Announcements are replayed from a compacted topic on every start, and a
        replay must not reset a posterior.
        """
        if arm in self._arms:
            return
        self._replace_arms({**self._arms, arm: self._new_arm(arm, min_share, min_pulls, prior)})

    def remove_arm(self, arm: Arm) -> None:
        """Remove an arm; removing an unknown arm is a no-op (retirements are replayed too)."""
        if self._arms.pop(arm, None) is not None:
            self._routing = None

    def update(self, arm: Arm, reward: float) -> None:
        state = self._arms.get(arm)
        if state is None:
            raise UnknownArm(f"no arm {arm!r}")
        state.record(self._checked_reward(reward))
        self._routing = None

    def probabilities(self) -> dict[Arm, float]:
        routing = self._current_routing()
        return dict(zip(routing.arms, routing.probabilities.tolist(), strict=True))

    def choose(self, rng: np.random.Generator) -> Decision:
        routing = self._current_routing()
        position = int(np.searchsorted(routing.cumulative, rng.random(), side="right"))
        index = int(routing.support[position])
        return Decision(routing.arms[index], float(routing.probabilities[index]))

    def summary(self) -> dict[Arm, ArmSummary]:
        return {arm: self._summarise(state) for arm, state in self._arms.items()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "version": SNAPSHOT_VERSION,
            "params": self._params(),
            "arms": [
                {
                    "arm": arm,
                    "prior": dict(state.prior),
                    "min_share": state.min_share,
                    "min_pulls": state.min_pulls,
                    "pulls": state.pulls,
                    "total": state.total,
                    "m2": state.m2,
                }
                for arm, state in self._arms.items()
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replace the arms and their statistics with a snapshot's.

        Parameters (epsilon, c, ...) stay those this policy was configured
        with: configuration may change across a restart, learned state should
        not be lost. ``policy_from_snapshot`` rebuilds a policy exactly.
        """
        if state.get("policy") != self.name:
            raise PolicyError(f"snapshot of policy {state.get('policy')!r}, not {self.name!r}")
        if state.get("version") != SNAPSHOT_VERSION:
            raise PolicyError(f"snapshot version {state.get('version')!r} is not supported")
        arms: dict[Arm, _ArmState] = {}
        try:
            for entry in state["arms"]:
                if entry["arm"] in arms:
                    raise PolicyError(f"snapshot lists arm {entry['arm']!r} twice")
                arms[entry["arm"]] = self._restored_arm(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"malformed snapshot: {exc!r}") from None
        self._replace_arms(arms)

    def _replace_arms(self, arms: dict[Arm, _ArmState]) -> None:
        floors = sum(state.min_share for state in arms.values())
        if floors > 1.0:
            raise PolicyError(f"the arms' min_share values add up to {floors} > 1")
        self._arms = arms
        self._routing = None

    def _current_routing(self) -> _Routing:
        if self._routing is None:
            self._routing = self._compute_routing()
        return self._routing

    def _compute_routing(self) -> _Routing:
        if not self._arms:
            raise PolicyError("the policy has no arms")
        states = list(self._arms.values())
        floors = np.array([state.floor for state in states])
        probabilities = floors + (1.0 - floors.sum()) * self._core_probabilities(states)
        support = np.flatnonzero(probabilities > 0.0)
        cumulative = np.cumsum(probabilities[support])
        cumulative /= cumulative[-1]
        # rng.random() < 1 exactly, so the search never runs past the last supported arm
        cumulative[-1] = 1.0
        return _Routing(tuple(self._arms), probabilities, support, cumulative)

    def _checked_prior(self, prior: Mapping[str, float]) -> dict[str, float]:
        unknown = set(prior) - set(self._prior_defaults)
        if unknown:
            allowed = ", ".join(sorted(self._prior_defaults)) or "none"
            raise PolicyError(f"{self.name}: unknown prior {sorted(unknown)}; allowed: {allowed}")
        checked = {**self._prior_defaults, **{key: float(value) for key, value in prior.items()}}
        self._check_prior(checked)
        return checked

    def _check_prior(self, prior: dict[str, float]) -> None:
        """Reject priors outside their domain; every policy's priors so far must be positive."""
        for key, value in prior.items():
            if key != "mean" and not value > 0.0:
                raise PolicyError(f"{self.name}: prior {key} must be > 0, got {value}")
            if not math.isfinite(value):
                raise PolicyError(f"{self.name}: prior {key} must be finite, got {value}")

    def _checked_reward(self, reward: float) -> float:
        value = float(reward)
        if not math.isfinite(value):
            raise PolicyError(f"reward must be finite, got {reward!r}")
        return value

    def _new_arm(
        self, arm: Arm, min_share: float, min_pulls: int, prior: Mapping[str, float]
    ) -> _ArmState:
        if not isinstance(arm, str) or not arm:
            raise PolicyError(f"arm must be a non-empty string, got {arm!r}")
        if not 0.0 <= min_share <= 1.0:
            raise PolicyError(f"min_share must be in [0, 1], got {min_share}")
        if min_pulls < 0:
            raise PolicyError(f"min_pulls must be >= 0, got {min_pulls}")
        return _ArmState(self._checked_prior(prior), float(min_share), int(min_pulls))

    def _restored_arm(self, entry: Mapping[str, Any]) -> _ArmState:
        state = self._new_arm(entry["arm"], entry["min_share"], entry["min_pulls"], entry["prior"])
        pulls, total, m2 = entry["pulls"], float(entry["total"]), float(entry["m2"])
        if not isinstance(pulls, int) or pulls < 0 or not math.isfinite(total) or not m2 >= 0:
            raise PolicyError(f"snapshot arm {entry['arm']!r} has invalid statistics")
        state.pulls, state.total, state.m2 = pulls, total, m2
        return state

    def _summarise(self, state: _ArmState) -> ArmSummary:
        """Sample mean with a normal-approximation 95% interval (undefined below 2 rewards)."""
        if state.pulls < 2:
            return ArmSummary(pulls=state.pulls, mean=state.mean, ci_low=math.nan, ci_high=math.nan)
        half_width = _Z95 * math.sqrt(state.m2 / (state.pulls - 1) / state.pulls)
        return ArmSummary(
            pulls=state.pulls,
            mean=state.mean,
            ci_low=state.mean - half_width,
            ci_high=state.mean + half_width,
        )

    def _params(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def _core_probabilities(self, states: list[_ArmState]) -> FloatArray:
        """The policy's own choice probabilities, before exploration floors, in ``states`` order."""


def _share_among_best(values: FloatArray) -> FloatArray:
    """All probability on the largest value, split evenly among ties so propensities stay honest."""
    best = values == values.max()
    return best / best.sum()


class FixedSplit(_BasePolicy):
    """Classic A/B(/n) test: each arm gets a fixed share of traffic, proportional to its weight."""

    name = "ab"
    _prior_defaults = {"weight": 1.0}

    def __init__(self, weights: Mapping[Arm, float] | None = None) -> None:
        super().__init__()
        for arm, weight in (weights or {}).items():
            self.add_arm(arm, weight=weight)

    def _core_probabilities(self, states: list[_ArmState]) -> FloatArray:
        weights = np.array([state.prior["weight"] for state in states])
        return weights / weights.sum()


class EpsilonGreedy(_BasePolicy):
    """Best sample mean with probability 1 - epsilon, a uniformly random arm otherwise.

    An arm without rewards has no mean to be greedy about: it is reached through
    exploration (and its min_share floor) until its first reward, so a new model
    version never takes most of the traffic on no evidence.
    """

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon <= 1.0:
            raise PolicyError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def _core_probabilities(self, states: list[_ArmState]) -> FloatArray:
        means = np.array([state.mean if state.pulls else -math.inf for state in states])
        greedy = _share_among_best(means)
        return self.epsilon / len(states) + (1.0 - self.epsilon) * greedy

    def _params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}


class UCB1(_BasePolicy):
    """Auer et al. (2002): the arm maximising mean + c * sqrt(2 ln N / n); unplayed arms first.

    The bonus assumes rewards in [0, 1]; scale ``c`` by the reward range otherwise.
    """

    name = "ucb1"

    def __init__(self, c: float = 1.0) -> None:
        super().__init__()
        if not c >= 0.0:
            raise PolicyError(f"c must be >= 0, got {c}")
        self.c = float(c)

    def bonus(self, pulls: int, total_pulls: int) -> float:
        return self.c * math.sqrt(2.0 * math.log(total_pulls) / pulls)

    def _core_probabilities(self, states: list[_ArmState]) -> FloatArray:
        total_pulls = sum(state.pulls for state in states)
        indices = np.array(
            [
                state.mean + self.bonus(state.pulls, total_pulls) if state.pulls else math.inf
                for state in states
            ]
        )
        return _share_among_best(indices)

    def _params(self) -> dict[str, Any]:
        return {"c": self.c}


class _ThompsonPolicy(_BasePolicy):
    """Routes by a fixed-seed Monte Carlo estimate of each arm's posterior P(best)."""

    def __init__(self, mc_draws: int = 10_000, mc_seed: int = 0) -> None:
        super().__init__()
        if mc_draws < 1:
            raise PolicyError(f"mc_draws must be >= 1, got {mc_draws}")
        if mc_seed < 0:
            raise PolicyError(f"mc_seed must be >= 0, got {mc_seed}")
        self.mc_draws = int(mc_draws)
        self.mc_seed = int(mc_seed)

    def posterior_draws(self, n: int, rng: np.random.Generator) -> FloatArray:
        if not self._arms:
            raise PolicyError("the policy has no arms")
        return self._draw(list(self._arms.values()), n, rng)

    def _core_probabilities(self, states: list[_ArmState]) -> FloatArray:
        draws = self._draw(states, self.mc_draws, np.random.default_rng(self.mc_seed))
        return p_best(draws)

    def _params(self) -> dict[str, Any]:
        return {"mc_draws": self.mc_draws, "mc_seed": self.mc_seed}

    @abstractmethod
    def _draw(self, states: list[_ArmState], n: int, rng: np.random.Generator) -> FloatArray:
        """Joint posterior draws of the arms' means, shape (n, len(states))."""


class ThompsonBeta(_ThompsonPolicy):
    """Beta-Bernoulli Thompson sampling for 0/1 rewards, prior Beta(alpha, beta) (default 1, 1)."""

    name = "thompson_beta"
    _prior_defaults = {"alpha": 1.0, "beta": 1.0}

    def _checked_reward(self, reward: float) -> float:
        value = float(reward)
        if value not in (0.0, 1.0):
            raise PolicyError(f"thompson_beta takes 0/1 rewards, got {reward!r}")
        return value

    @staticmethod
    def _posterior(state: _ArmState) -> tuple[float, float]:
        successes = state.total
        return state.prior["alpha"] + successes, state.prior["beta"] + state.pulls - successes

    def _draw(self, states: list[_ArmState], n: int, rng: np.random.Generator) -> FloatArray:
        alpha, beta = np.array([self._posterior(state) for state in states]).T
        return rng.beta(alpha, beta, size=(n, len(states)))

    def _summarise(self, state: _ArmState) -> ArmSummary:
        alpha, beta = self._posterior(state)
        low, high = stats.beta.ppf([0.025, 0.975], alpha, beta)
        return ArmSummary(
            pulls=state.pulls, mean=alpha / (alpha + beta), ci_low=float(low), ci_high=float(high)
        )


class _NormalInverseGamma(NamedTuple):
    mean: float
    kappa: float
    alpha: float
    beta: float

    def marginal_of_mean(self) -> Any:
        """The posterior of the mean reward with the variance integrated out: a Student t."""
        scale = math.sqrt(self.beta / (self.alpha * self.kappa))
        return stats.t(df=2.0 * self.alpha, loc=self.mean, scale=scale)


class ThompsonGaussian(_ThompsonPolicy):
    """Thompson sampling for real-valued rewards, Normal with unknown mean and variance.

    Conjugate Normal-Inverse-Gamma prior: variance ~ InvGamma(alpha, beta) and
    mean | variance ~ Normal(mean, variance / kappa). The default (mean 0,
    kappa 1, alpha 1, beta 1) is weak only for rewards of order 1: set the prior
    to the reward's scale (e.g. mean = a typical reward, beta ~ its variance).
    """

    name = "thompson_gaussian"
    _prior_defaults = {"mean": 0.0, "kappa": 1.0, "alpha": 1.0, "beta": 1.0}

    @staticmethod
    def _posterior(state: _ArmState) -> _NormalInverseGamma:
        prior, n = state.prior, state.pulls
        if n == 0:
            return _NormalInverseGamma(prior["mean"], prior["kappa"], prior["alpha"], prior["beta"])
        sample_mean = state.total / n
        kappa = prior["kappa"] + n
        shrinkage = prior["kappa"] * n * (sample_mean - prior["mean"]) ** 2 / (2.0 * kappa)
        return _NormalInverseGamma(
            mean=(prior["kappa"] * prior["mean"] + state.total) / kappa,
            kappa=kappa,
            alpha=prior["alpha"] + n / 2.0,
            beta=prior["beta"] + state.m2 / 2.0 + shrinkage,
        )

    def _draw(self, states: list[_ArmState], n: int, rng: np.random.Generator) -> FloatArray:
        posterior = np.array([self._posterior(state) for state in states])
        mean, kappa, alpha, beta = posterior.T
        variance = beta / rng.gamma(alpha, size=(n, len(states)))
        return mean + np.sqrt(variance / kappa) * rng.standard_normal((n, len(states)))

    def _summarise(self, state: _ArmState) -> ArmSummary:
        posterior = self._posterior(state)
        low, high = posterior.marginal_of_mean().ppf([0.025, 0.975])
        return ArmSummary(
            pulls=state.pulls, mean=posterior.mean, ci_low=float(low), ci_high=float(high)
        )


# --- value remaining and promotion ----------------------------------------------


def p_best(draws: FloatArray) -> FloatArray:
    """P(each arm is best), from joint draws shaped (..., n_draws, n_arms)."""
    best = draws.argmax(axis=-1)
    return (best[..., None] == np.arange(draws.shape[-1])).mean(axis=-2)


class ValueRemaining(NamedTuple):
    champion: NDArray[np.intp]  # shape (...): the arm most likely to be best
    p_best: FloatArray  # shape (..., n_arms)
    loss: FloatArray  # shape (..., n_draws): what promoting the champion gives up, per draw


def value_remaining(draws: FloatArray, relative: bool = True) -> ValueRemaining:
    """Scott (2015): per draw, (max_a theta_a - theta_champion), over theta_champion if relative.

    ``draws`` is shaped (..., n_draws, n_arms); leading axes (e.g. simulation
    runs) are independent problems.
    """
    probabilities = p_best(draws)
    champion = probabilities.argmax(axis=-1)
    picked = np.broadcast_to(champion[..., None, None], (*draws.shape[:-1], 1))
    champion_draws = np.take_along_axis(draws, picked, axis=-1)[..., 0]
    loss = draws.max(axis=-1) - champion_draws
    if relative:
        if not np.all(champion_draws > 0):
            raise PolicyError("a relative value remaining needs positive draws; use relative=False")
        loss = loss / champion_draws
    return ValueRemaining(champion, probabilities, loss)


@dataclass(frozen=True, slots=True)
class PromotionRule:
    """Promote the champion when P(best) >= min_p_best and its loss is below max_loss.

    The loss is the expected value remaining (``loss_quantile=None``) or a
    quantile of it (Google Analytics used 0.95: "95% sure that less than 1%
    remains"); ``relative`` measures it as a fraction of the champion's value,
    right for conversion rates, while real-valued rewards want absolute units.
    """

    min_p_best: float = 0.95
    max_loss: float = 0.01
    relative: bool = True
    loss_quantile: float | None = None


@dataclass(frozen=True, slots=True)
class Promotion:
    champion: Arm
    p_best: float
    loss: float
    promote: bool


def promotion_decision(
    policy: BayesianPolicy,
    rule: PromotionRule = PromotionRule(),
    *,
    draws: int = 10_000,
    seed: int = 0,
) -> Promotion:
    """The "value remaining" rule on the policy's posterior; a fixed seed makes it repeatable."""
    remaining = value_remaining(
        policy.posterior_draws(draws, np.random.default_rng(seed)), rule.relative
    )
    champion = int(remaining.champion)
    if rule.loss_quantile is None:
        loss = float(remaining.loss.mean())
    else:
        loss = float(np.quantile(remaining.loss, rule.loss_quantile))
    probability = float(remaining.p_best[champion])
    return Promotion(
        champion=policy.arms[champion],
        p_best=probability,
        loss=loss,
        promote=probability >= rule.min_p_best and loss < rule.max_loss,
    )


# --- construction --------------------------------------------------------------

_POLICIES: dict[str, type[_BasePolicy]] = {
    policy.name: policy
    for policy in (FixedSplit, EpsilonGreedy, UCB1, ThompsonBeta, ThompsonGaussian)
}
POLICY_NAMES = tuple(_POLICIES)


def make_policy(name: str, *, arms: Iterable[Arm] = (), **params: Any) -> Policy:
    """Build a policy by its configuration name, with default-prior arms."""
    policy_class = _POLICIES.get(name)
    if policy_class is None:
        raise PolicyError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    try:
        inspect.signature(policy_class).bind(**params)
    except TypeError as exc:
        raise PolicyError(f"{name}: {exc}") from None
    policy = policy_class(**params)
    for arm in arms:
        policy.add_arm(arm)
    return policy


def policy_from_snapshot(state: Mapping[str, Any]) -> Policy:
    """Rebuild a policy exactly (parameters, arms, statistics) from ``snapshot()``."""
    policy = make_policy(state["policy"], **state["params"])
    policy.restore(state)
    return policy
