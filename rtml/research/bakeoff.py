"""``rtml evaluate cb-bakeoff``: our contextual bandits against peers on supervised data.

The conversion of Bietti, Agarwal & Langford, "A Contextual Bandit Bake-off"
(JMLR 2021): a K-class dataset becomes a K-armed contextual bandit. Each seed
shuffles the rows once (``np.random.default_rng`` of a child of the seed); in
that order every method sees a row's features, picks a class, and is rewarded
1 if the class is the label, 0 otherwise. The paper states the same feedback as
costs: VW is given cost = 1 - reward (0 for the right class, 1 otherwise), the
paper's 0/1 encoding. A method learns only from the reward of the class it
picked (bandit feedback), in one pass.

Progressive validation: the score of a pass is the mean reward over all its
rounds, each reward earned *before* the method learns from that round, so it
measures online performance on unseen rows without a held-out set.

Features: each is standardized to mean 0 and variance 1 over the dataset (a
constant feature becomes 0), then a constant 1 is appended as the intercept.
Per-arm ridge regressions are not scale invariant, so every method gets the
same standardized contexts (VW, whose default updates are normalized, gets them
too). The statistics come from the whole dataset: a fixed offline
preprocessing, the only thing any method knows about rows it has not seen yet.

Methods, each over a small grid (``GRIDS``: at most 6 configurations each, the
same budget for every family), reporting per dataset the configuration with
the best mean over the seeds:

- ours: ``shared.bandits.contextual`` epsilon-greedy, LinUCB and linear
  Thompson sampling (disjoint per-arm ridge regressions);
- Vowpal Wabbit ``--cb_explore_adf`` with epsilon-greedy, bagging, online cover
  and SquareCB through its Python API (``vowpalwabbit.Workspace``): one
  multiline ADF example per round, the features on the shared line, one line
  per class holding only that class's indicator, and ``-q sa`` crossing the two
  so that every class gets its own weights on the features (what VW's
  ``--cbify`` does internally for multiclass data with ADF). Its exploration
  parameters are fixed at values the paper found good (epsilon 0.02, 4 bags,
  cover 4 with psi 0.1 and no uniform exploration, SquareCB's default gamma
  scale) and the grid is over learning rates, the parameter the paper found it
  most sensitive to;
- MABWiser's LinUCB and LinTS on the same grid as ours (the same model class);
- the full-information skyline: the same model class (one ridge regression per
  class, greedy argmax) learning online with every class's reward revealed on
  every round, which bounds what any bandit could learn from this stream;
- uniform random as the floor (1/K).

Throughput: decisions/s is rounds / CPU seconds of this process in the pass
loop (choose + reward + learn), summed over the seeds of the reported
configuration. CPU time rather than wall clock, so that the figure does not
depend on what else a shared machine runs meanwhile (the wall-clock rate is in
the JSON too); every method is timed in the same process and invocation. For
VW it includes formatting each round's text example, which its Python API
requires.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import platform
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from rtml.shared.bandits.contextual import make_contextual_policy
from rtml.shared.errors import RtmlError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Params = Mapping[str, float]

DATASETS = ("digits", "wine", "breast_cancer")
DEFAULT_SEEDS = 10
QUICK_SEEDS = 3
QUICK_DATASETS = ("digits",)
# the reduced setting (CI) also cuts each pass to its first rounds
QUICK_ROUNDS = 500
SKYLINE_TARGET = 0.95
FAMILIES = ("ours", "vw", "mabwiser")
INSTALL_HINT = "pip install 'rtml[bench]'"


class BakeoffError(RtmlError):
    """Invalid bake-off settings or a missing dataset package."""


# --- the conversion ------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    name: str
    contexts: FloatArray  # (n, dim): standardized features, then a constant 1
    labels: IntArray  # (n,), class indices in range(n_classes)
    n_classes: int

    @property
    def dim(self) -> int:
        return self.contexts.shape[1]


def standardize(features: FloatArray) -> FloatArray:
    """Each column to mean 0 and variance 1; a constant column becomes 0."""
    matrix = np.asarray(features, dtype=np.float64)
    spread = matrix.std(axis=0)
    return (matrix - matrix.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def to_bandit(name: str, features: FloatArray, labels: Sequence[Any]) -> Dataset:
    """A supervised dataset as a contextual bandit: arms are the classes."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise BakeoffError(f"{name}: needs at least 2 classes, got {len(classes)}")
    standardized = standardize(features)
    contexts = np.hstack([standardized, np.ones((len(standardized), 1))])
    return Dataset(name, contexts, codes.astype(np.int64), len(classes))


def load_dataset(name: str) -> Dataset:
    """One of ``DATASETS``, as shipped inside scikit-learn (nothing is downloaded)."""
    if name not in DATASETS:
        raise BakeoffError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    try:
        from sklearn import datasets
    except ImportError:
        raise BakeoffError(
            f"the bake-off datasets ship with scikit-learn: {INSTALL_HINT}"
        ) from None
    features, labels = getattr(datasets, f"load_{name}")(return_X_y=True)
    return to_bandit(name, features, labels)


# --- learners ------------------------------------------------------------------------


class Learner(Protocol):
    """Picks an arm for a context, then learns from that round (``learn`` always
    follows the ``choose`` of the same round)."""

    def choose(self, context: FloatArray, rng: np.random.Generator) -> int: ...

    def learn(self, context: FloatArray, arm: int, reward: float) -> None: ...


class FullInformationLearner(Protocol):
    def choose(self, context: FloatArray, rng: np.random.Generator) -> int: ...

    def learn_label(self, context: FloatArray, label: int) -> None: ...


class OurPolicy:
    def __init__(self, policy_name: str, dataset: Dataset, params: Params) -> None:
        self.policy = make_contextual_policy(policy_name, dataset.n_classes, dataset.dim, **params)

    def choose(self, context: FloatArray, rng: np.random.Generator) -> int:
        return self.policy.choose(context, rng).arm

    def learn(self, context: FloatArray, arm: int, reward: float) -> None:
        self.policy.update(arm, context, reward)


class UniformRandom:
    def __init__(self, n_arms: int) -> None:
        self.n_arms = n_arms

    def choose(self, context: FloatArray, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n_arms))

    def learn(self, context: FloatArray, arm: int, reward: float) -> None:
        """Uniform random learns nothing."""


class FullInformationRidge:
    """One ridge regression per class of the one-hot label on the context, all
    updated every round, and the greedy argmax (exact ties broken at random).

    Every class sees every context, so the classes share one Gram matrix:
    A = ridge * I + sum x x^T (its inverse kept by Sherman-Morrison) and the
    coefficients are A^{-1} B with B = sum x onehot(label)^T.
    """

    def __init__(self, n_arms: int, dim: int, ridge: float) -> None:
        self._inverse = np.eye(dim) / ridge
        self._targets = np.zeros((dim, n_arms))
        self._coefficients = np.zeros((dim, n_arms))

    def choose(self, context: FloatArray, rng: np.random.Generator) -> int:
        scores = context @ self._coefficients
        best = np.flatnonzero(scores == scores.max())
        return int(best[0]) if len(best) == 1 else int(rng.choice(best))

    def learn_label(self, context: FloatArray, label: int) -> None:
        projected = self._inverse @ context
        self._inverse -= np.outer(projected, projected) / (1.0 + projected @ context)
        self._targets[:, label] += context
        self._coefficients = self._inverse @ self._targets


class VowpalWabbitADF:
    """``--cb_explore_adf`` through ``vowpalwabbit.Workspace`` with text examples."""

    def __init__(self, exploration: str, dataset: Dataset, params: Params, seed: int) -> None:
        from vowpalwabbit import Workspace

        self._workspace = Workspace(vw_arguments(exploration, params["learning_rate"], seed))
        self._actions = [f"|a {arm}" for arm in range(dataset.n_classes)]
        self._shared = ""
        self._probability = 1.0

    def choose(self, context: FloatArray, rng: np.random.Generator) -> int:
        present = np.flatnonzero(context)
        self._shared = "shared |s " + " ".join(
            map("{}:{:.6g}".format, present.tolist(), context[present].tolist())
        )
        pmf = np.asarray(self._workspace.predict([self._shared, *self._actions]))
        # VW returns the distribution; drawing from it is the caller's job
        cumulative = np.cumsum(pmf)
        arm = min(
            int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right")), len(pmf) - 1
        )
        self._probability = float(pmf[arm])
        return arm

    def learn(self, context: FloatArray, arm: int, reward: float) -> None:
        lines = [self._shared, *self._actions]
        lines[1 + arm] = f"0:{1.0 - reward}:{self._probability} {self._actions[arm]}"
        self._workspace.learn(lines)


VW_EXPLORATION = {
    "epsilon": "--epsilon 0.02",
    "bag": "--bag 4",
    "cover": "--cover 4 --psi 0.1 --nounif",
    "squarecb": "--squarecb",
}


def vw_arguments(exploration: str, learning_rate: float, seed: int) -> str:
    return (
        f"--cb_explore_adf {VW_EXPLORATION[exploration]} -q sa "
        f"--learning_rate {learning_rate} --random_seed {seed} --quiet"
    )


class MabwiserLinear:
    """MABWiser's ``LinUCB`` / ``LinTS``, one row per ``predict`` and ``partial_fit``."""

    def __init__(self, policy_name: str, dataset: Dataset, params: Params, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        learning_policy = getattr(LearningPolicy, policy_name)(
            alpha=params["alpha"], l2_lambda=params["ridge"]
        )
        self._mab = MAB(list(range(dataset.n_classes)), learning_policy, seed=seed)
        self._n_arms = dataset.n_classes
        self._fitted = False

    def choose(self, context: FloatArray, rng: np.random.Generator) -> int:
        if not self._fitted:  # MABWiser cannot predict before its first fit
            return int(rng.integers(self._n_arms))
        return int(self._mab.predict(context[None, :]))

    def learn(self, context: FloatArray, arm: int, reward: float) -> None:
        self._mab.partial_fit([arm], [reward], context[None, :])
        self._fitted = True


# --- methods and their grids ---------------------------------------------------------


def _grid(**axes: Sequence[float]) -> tuple[dict[str, float], ...]:
    return tuple(
        dict(zip(axes, map(float, combo), strict=True))
        for combo in itertools.product(*axes.values())
    )


_RIDGES = (1.0, 10.0)
# the upper six of the paper's learning rates (it also tried 0.001 to 0.01)
_VW_GRID = _grid(learning_rate=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0))
_UCB_GRID = _grid(alpha=(0.1, 0.3, 1.0), ridge=_RIDGES)
_TS_GRID = _grid(alpha=(0.03, 0.1, 0.3), ridge=_RIDGES)


@dataclass(frozen=True)
class Method:
    key: str
    family: str  # ours | vw | mabwiser | skyline | reference
    build: Callable[[Dataset, Params, int], Learner | FullInformationLearner]
    grid: tuple[dict[str, float], ...]
    quick_grid: tuple[dict[str, float], ...]
    requires: str | None = None
    full_information: bool = False


def _ours(policy_name: str, key: str, grid: tuple[dict[str, float], ...], quick: dict) -> Method:
    # ours names the Thompson width "scale"; MABWiser's LinTS calls the same thing "alpha"
    rename = {"alpha": "scale"} if policy_name == "linear_ts" else {}
    ours_grid = tuple({rename.get(k, k): v for k, v in params.items()} for params in grid)
    return Method(
        key,
        "ours",
        lambda data, params, seed: OurPolicy(policy_name, data, params),
        ours_grid,
        ({rename.get(k, k): v for k, v in quick.items()},),
    )


def _vw(exploration: str) -> Method:
    return Method(
        f"vw {exploration}",
        "vw",
        lambda data, params, seed: VowpalWabbitADF(exploration, data, params, seed),
        _VW_GRID,
        ({"learning_rate": 1.0},),
        requires="vowpalwabbit",
    )


def _mabwiser(policy_name: str, grid: tuple[dict[str, float], ...], quick: dict) -> Method:
    return Method(
        f"mabwiser {policy_name}",
        "mabwiser",
        lambda data, params, seed: MabwiserLinear(policy_name, data, params, seed),
        grid,
        (quick,),
        requires="mabwiser",
    )


_QUICK_UCB = {"alpha": 0.3, "ridge": 10.0}
_QUICK_TS = {"alpha": 0.1, "ridge": 10.0}

METHODS: tuple[Method, ...] = (
    _ours(
        "epsilon_greedy_linear",
        "ours epsilon-greedy",
        _grid(epsilon=(0.0, 0.02, 0.1), ridge=_RIDGES),
        {"epsilon": 0.02, "ridge": 10.0},
    ),
    _ours("linucb", "ours LinUCB", _UCB_GRID, _QUICK_UCB),
    _ours("linear_ts", "ours linear TS", _TS_GRID, _QUICK_TS),
    *(_vw(exploration) for exploration in VW_EXPLORATION),
    _mabwiser("LinUCB", _UCB_GRID, _QUICK_UCB),
    _mabwiser("LinTS", _TS_GRID, _QUICK_TS),
    Method(
        "skyline (full information)",
        "skyline",
        lambda data, params, seed: FullInformationRidge(data.n_classes, data.dim, params["ridge"]),
        _grid(ridge=(0.3, 1.0, 3.0, 10.0, 30.0, 100.0)),
        ({"ridge": 10.0},),
        full_information=True,
    ),
    Method(
        "uniform random",
        "reference",
        lambda data, params, seed: UniformRandom(data.n_classes),
        ({},),
        ({},),
    ),
)


# --- progressive validation ----------------------------------------------------------


@dataclass(frozen=True)
class PassResult:
    reward: float  # mean reward over the pass
    rounds: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time


def stream(
    dataset: Dataset, seed: int, rounds: int | None = None
) -> tuple[IntArray, np.random.Generator]:
    """The seed's row order (first ``rounds`` of one shuffle) and the generator the
    method draws its exploration from; every method gets the same two for a seed."""
    order_seed, policy_seed = np.random.SeedSequence(seed).spawn(2)
    order = np.random.default_rng(order_seed).permutation(len(dataset.labels))
    return order[:rounds], np.random.default_rng(policy_seed)


def progressive_pass(
    learner: Learner | FullInformationLearner,
    dataset: Dataset,
    order: IntArray,
    rng: np.random.Generator,
    full_information: bool = False,
) -> PassResult:
    """One pass in ``order``: each round's reward is counted before the learner
    sees its feedback (the chosen arm's reward, or the label under full information)."""
    contexts, labels = dataset.contexts, dataset.labels
    total = 0.0
    started, cpu_started = time.perf_counter(), time.process_time()
    for index in order:
        context, label = contexts[index], int(labels[index])
        arm = learner.choose(context, rng)
        reward = 1.0 if arm == label else 0.0
        total += reward
        if full_information:
            learner.learn_label(context, label)
        else:
            learner.learn(context, arm, reward)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return PassResult(total / len(order), len(order), seconds, cpu_seconds)


# --- the run -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    datasets: tuple[str, ...] = DATASETS
    seeds: int = DEFAULT_SEEDS
    quick: bool = False
    families: tuple[str, ...] = FAMILIES  # the skyline and uniform random always run

    def __post_init__(self) -> None:
        if self.seeds < 2:
            raise BakeoffError(f"seeds must be >= 2 for an interval, got {self.seeds}")
        unknown = [name for name in self.datasets if name not in DATASETS]
        if unknown or not self.datasets:
            raise BakeoffError(f"datasets must be among {', '.join(DATASETS)}, got {unknown}")
        unknown = [name for name in self.families if name not in FAMILIES]
        if unknown or not self.families:
            raise BakeoffError(f"methods must be among {', '.join(FAMILIES)}, got {unknown}")

    @classmethod
    def reduced(cls) -> Setting:
        return cls(datasets=QUICK_DATASETS, seeds=QUICK_SEEDS, quick=True)

    @property
    def rounds(self) -> int | None:
        return QUICK_ROUNDS if self.quick else None


@dataclass
class ConfigResult:
    params: dict[str, float]
    passes: list[PassResult] = field(default_factory=list)

    @property
    def rewards(self) -> FloatArray:
        return np.array([p.reward for p in self.passes])

    def decisions_per_second(self, clock: str = "cpu_seconds") -> float:
        return sum(p.rounds for p in self.passes) / sum(getattr(p, clock) for p in self.passes)


def mean_interval(values: FloatArray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over independent seeds."""
    mean = float(np.mean(values))
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * stats.sem(values)
    half = 0.0 if not math.isfinite(half) else float(half)  # identical values: sem 0
    return mean, mean - half, mean + half


def available(method: Method) -> bool:
    return method.requires is None or importlib.util.find_spec(method.requires) is not None


def evaluate_method(method: Method, dataset: Dataset, setting: Setting) -> list[ConfigResult]:
    results = []
    for params in method.quick_grid if setting.quick else method.grid:
        result = ConfigResult(dict(params))
        for seed in range(setting.seeds):
            order, rng = stream(dataset, seed, setting.rounds)
            learner = method.build(dataset, params, seed)
            result.passes.append(
                progressive_pass(learner, dataset, order, rng, method.full_information)
            )
        results.append(result)
    return results


def summarize(method: Method, dataset: Dataset, results: list[ConfigResult]) -> dict[str, Any]:
    best = max(results, key=lambda result: result.rewards.mean())
    mean, low, high = mean_interval(best.rewards)
    return {
        "dataset": dataset.name,
        "method": method.key,
        "family": method.family,
        "best_params": best.params,
        "reward": mean,
        "reward_low": low,
        "reward_high": high,
        "decisions_per_s": best.decisions_per_second(),
        "decisions_per_wall_s": best.decisions_per_second("seconds"),
        "grid": [
            {"params": r.params, "reward": float(r.rewards.mean()), "seeds": len(r.passes)}
            for r in results
        ],
    }


def targets(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The issue's targets on one dataset, judged on the means (and whether the
    95% intervals separate); None when ours did not run."""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    if "ours" not in by_family:
        return None
    ours = max(by_family["ours"], key=lambda row: row["reward"])
    verdict: dict[str, Any] = {"our_best": ours["method"], "our_reward": ours["reward"]}
    for family in ("vw", "mabwiser"):
        if family not in by_family:
            verdict[f"above_{family}"] = None
            continue
        peer = max(by_family[family], key=lambda row: row["reward"])
        verdict[f"above_{family}"] = ours["reward"] > peer["reward"]
        verdict[f"above_{family}_separated"] = ours["reward_low"] > peer["reward_high"]
        verdict[f"best_{family}"] = peer["method"]
    verdict["skyline_ratio"] = ours["ratio_to_skyline"]
    verdict["skyline_met"] = ours["ratio_to_skyline"] >= SKYLINE_TARGET
    if "vw" in by_family:
        fastest_vw = max(row["decisions_per_s"] for row in by_family["vw"])
        verdict["speed_vs_fastest_vw"] = ours["decisions_per_s"] / fastest_vw
        verdict["speed_met"] = ours["decisions_per_s"] >= fastest_vw
    return verdict


def run_bakeoff(setting: Setting, progress: Callable[[str], None] = lambda line: None) -> dict:
    chosen = [
        method
        for method in METHODS
        if method.family in setting.families or method.family not in FAMILIES
    ]
    methods = [method for method in chosen if available(method)]
    skipped = [
        f"{method.key}: {method.requires} is not installed ({INSTALL_HINT})"
        for method in chosen
        if not available(method)
    ]
    rows, verdicts = [], {}
    for name in setting.datasets:
        dataset = load_dataset(name)
        dataset_rows = []
        for method in methods:
            row = summarize(method, dataset, evaluate_method(method, dataset, setting))
            progress(
                f"{name}: {method.key}: {_params_text(row['best_params'])}: reward"
                f" {row['reward']:.3f}, {row['decisions_per_s']:,.0f} decisions/s"
            )
            dataset_rows.append(row)
        skyline = next(row["reward"] for row in dataset_rows if row["family"] == "skyline")
        for row in dataset_rows:
            row["ratio_to_skyline"] = row["reward"] / skyline
        verdicts[name] = targets(dataset_rows)
        rows.extend(dataset_rows)
    return {
        "setting": {
            "datasets": list(setting.datasets),
            "seeds": setting.seeds,
            "quick": setting.quick,
            "methods": list(setting.families),
            "rounds_per_pass": setting.rounds or "all",
        },
        "machine": machine(),
        "peak_rss_mib": peak_rss_mib(),
        "rows": rows,
        "targets": verdicts,
        "skipped": skipped,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


# --- the report ----------------------------------------------------------------------


def _params_text(params: Mapping[str, float]) -> str:
    return " ".join(f"{name}={value:g}" for name, value in params.items()) or "-"


def format_report(report: dict) -> str:
    setting = report["setting"]
    lines = [
        f"contextual bandit bake-off: {', '.join(setting['datasets'])}; {setting['seeds']} seeds,"
        f" rounds per pass: {setting['rounds_per_pass']}; {report['machine']};"
        f" peak RSS {report['peak_rss_mib']:.0f} MiB",
        "reward = progressive-validation reward (mean over one pass), mean over seeds [95% t"
        " interval]; best configuration of each method's grid; decisions/s per CPU-second",
        "",
        f"{'dataset':<14} {'method':<28} {'best params':<24} {'reward [95% CI]':<24}"
        f" {'x skyline':>9} {'decisions/s':>11}",
    ]
    for row in report["rows"]:
        interval = f"{row['reward']:.3f} [{row['reward_low']:.3f}, {row['reward_high']:.3f}]"
        lines.append(
            f"{row['dataset']:<14} {row['method']:<28} {_params_text(row['best_params']):<24}"
            f" {interval:<24} {row['ratio_to_skyline']:>9.3f} {row['decisions_per_s']:>11,.0f}"
        )
    lines += ["", "targets (ours best vs peers, on means; 'separated' = 95% intervals disjoint):"]
    for name, verdict in report["targets"].items():
        lines.append(f"  {name}: {_verdict_text(verdict)}")
    lines += [f"  skipped {line}" for line in report["skipped"]]
    return "\n".join(lines)


def _verdict_text(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "not judged: ours did not run"
    parts = [f"our best {verdict['our_best']} {verdict['our_reward']:.3f}"]
    for family in ("vw", "mabwiser"):
        above = verdict[f"above_{family}"]
        if above is None:
            parts.append(f"{family} skipped")
            continue
        separated = "separated" if verdict[f"above_{family}_separated"] else "overlapping"
        state = "met" if above else "MISSED"
        parts.append(f"above {verdict[f'best_{family}']}: {state} ({separated})")
    state = "met" if verdict["skyline_met"] else "MISSED"
    parts.append(f">= {SKYLINE_TARGET}x skyline: {state} ({verdict['skyline_ratio']:.3f})")
    if "speed_met" in verdict:
        state = "met" if verdict["speed_met"] else "MISSED"
        parts.append(f"decisions/s >= fastest VW: {state} ({verdict['speed_vs_fastest_vw']:.2f}x)")
    return "; ".join(parts)
