"""Offline evaluation of recommendation policies on the uniform-random OBD logs.

One pass per policy over the logged rounds, in log order (the replay method of
Li et al. 2011): at every round the policy chooses an item for the round's
context; when its choice equals the logged item the round is *matched*, the
logged click is the policy's reward, and the policy learns from it -- only then,
as it would have learnt had it been deployed. From that one pass come three
estimates of the policy's click-through rate:

- **replay**: clicks over matched rounds;
- **IPS**: ``mean(1[choice = logged] * click / propensity)`` over all rounds,
  with the logged propensity; unbiased for any policy, since the indicator's
  expectation over the policy's own randomness is its probability of choosing
  the logged item;
- **DR** (doubly robust): ``mean(q(x, choice) + 1[choice = logged] / propensity
  * (click - q(x, logged)))``, where ``q`` is a reward model cross-fitted on the
  other half of the rounds (each item's click-through rate shrunk towards the
  log's), so that no round's reward enters its own model.

Positions: each logged impression is a round, whichever of the three slots it
was shown in, and the position is part of the context. That is how the dataset's
authors (Saito et al. 2021, and obp's off-policy estimators) evaluate the OBD:
in the random log every slot's item is drawn uniformly (propensity 1 / n_items),
so each slot is a valid uniform-random round, and keeping only position 1 would
keep a third of an already tiny number of clicks.

Intervals (95%): the estimates rest on a handful of matched clicks, where a
percentile bootstrap of rounds fails (it cannot resample clicks that did not
happen: zero matched clicks gives [0, 0]). So each click count is drawn from its
Jeffreys posterior, Beta(clicks + 1/2, misses + 1/2): replay's over the matched
rounds, IPS's over all rounds (scaled by 1 / propensity); DR adds a normal draw
of its control term, a mean over all rounds. The lift is the policy's estimate
minus the random policy's value measured directly -- the mean click of the
random log -- and its interval comes from the difference of the draws, at the
level 1 - 0.05 / (policies in the table) (Bonferroni), so that the table as a
whole calls a policy better or worse than random by chance at most 5% of the
time. The intervals cover the sampling noise of the logs, not the policy's own
randomness, which ``seed`` varies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from rtml.tasks.recs.obd import Campaign, LoggedRounds, UserFeatureEncoder, contexts, load_rounds
from rtml.tasks.recs.popularity import (
    DEFAULT_STRENGTH,
    SEGMENT_FEATURES,
    rank_segments,
    segment_name,
    shrunk_ctr,
)

ESTIMATORS = ("replay", "ips", "dr")
LIFT_FAMILY_MISS = 0.05
POLICIES = ("random", "popularity", "epsilon_greedy", "linucb", "linear_ts")
# this module's names -> shared.bandits.contextual's; the replay and the estimators use
# the sampled choice, never the policy's own propensity, so linear TS's propensity grid
# (which never changes a decision) is kept coarse: the default one costs 20x the time
CONTEXTUAL = {
    "epsilon_greedy": ("epsilon_greedy_linear", {}),
    "linucb": ("linucb", {}),
    "linear_ts": ("linear_ts", {"propensity_grid": 16}),
}


class Decision(Protocol):
    arm: int


class Policy(Protocol):
    def choose(self, context: np.ndarray, rng: np.random.Generator) -> Decision: ...

    def update(self, arm: int, context: np.ndarray, reward: float) -> None: ...


@dataclass(frozen=True)
class Choice:
    arm: int
    propensity: float


class UniformRandom:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def choose(self, context: np.ndarray, rng: np.random.Generator) -> Choice:
        return Choice(int(rng.integers(self.n_items)), 1.0 / self.n_items)

    def update(self, arm: int, context: np.ndarray, reward: float) -> None:
        """Uniform: nothing to learn."""


class BatchPopularity:
    """Stage-1 batch prediction: the segment's ranked list, item ``p`` in slot ``p``.

    The lists come from another log (computed before the evaluation, as a batch job
    would be), so the policy does not learn during the replay.
    """

    def __init__(self, lists: dict[str, list[int]], encoder: UserFeatureEncoder, campaign: str):
        self._lists = lists
        self._global = lists[segment_name(campaign, None)]
        self._encoder = encoder
        self._campaign = campaign

    def choose(self, context: np.ndarray, rng: np.random.Generator) -> Choice:
        user, position = context[: self._encoder.dim], context[self._encoder.dim :]
        codes = self._segment_codes(user)
        ranked = self._lists.get(segment_name(self._campaign, codes), self._global)
        return Choice(ranked[int(np.argmax(position))], 1.0)

    def update(self, arm: int, context: np.ndarray, reward: float) -> None:
        """A batch list changes at the next batch run, not per reward."""

    def _segment_codes(self, user: np.ndarray) -> tuple[int, ...]:
        codes, start = [], 0
        for values in self._encoder.categories[: len(SEGMENT_FEATURES)]:
            block = user[start : start + len(values)]
            codes.append(int(np.argmax(block)) if block.any() else -1)
            start += len(values)
        return tuple(codes)


def replay_pass(
    policy: Policy,
    context: np.ndarray,
    items: np.ndarray,
    clicks: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The policy's choice at every round; it learns from the matched rounds only."""
    chosen = np.empty(len(items), dtype=np.int64)
    for index in range(len(items)):
        arm = policy.choose(context[index], rng).arm
        chosen[index] = arm
        if arm == items[index]:
            policy.update(arm, context[index], float(clicks[index]))
    return chosen


def cross_fitted_reward_model(
    items: np.ndarray, clicks: np.ndarray, n_items: int, strength: float = DEFAULT_STRENGTH
) -> np.ndarray:
    """(rounds, n_items): each round's predicted click rate per item, from the other
    half of the rounds (alternate rounds form the halves)."""
    model = np.empty((len(items), n_items))
    half = np.arange(len(items)) % 2
    for fold in (0, 1):
        other = half != fold
        rounds = np.bincount(items[other], minlength=n_items)
        hits = np.bincount(items[other], weights=clicks[other], minlength=n_items)
        model[half == fold] = shrunk_ctr(hits, rounds, clicks[other].mean(), strength)
    return model


@dataclass(frozen=True)
class Counts:
    """What one replay pass leaves for the estimators."""

    rounds: int
    matched: int
    matched_clicks: int
    inverse_propensity: float  # 1 / the logged (uniform) propensity: n_items
    # per round, q(x, choice) - 1[choice = logged] / propensity * q(x, logged): DR's control
    control: np.ndarray

    @classmethod
    def of(cls, chosen, items, clicks, propensities, reward_model) -> Counts:
        if not np.allclose(propensities, propensities[0]):
            raise ValueError("these replay estimators need a uniform-random log")
        matched = chosen == items
        rows = np.arange(len(items))
        weight = matched / propensities
        control = reward_model[rows, chosen] - weight * reward_model[rows, items]
        return cls(
            rounds=len(items),
            matched=int(matched.sum()),
            matched_clicks=int(clicks[matched].sum()),
            inverse_propensity=float(1.0 / propensities[0]),
            control=control,
        )

    def estimates(self) -> dict[str, float]:
        ips = self.inverse_propensity * self.matched_clicks / self.rounds
        replay = self.matched_clicks / self.matched if self.matched else float("nan")
        return {"replay": replay, "ips": ips, "dr": ips + float(self.control.mean())}

    def draws(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """n draws of each estimate from its uncertainty (see ``jeffreys``); DR adds
        the normal approximation of its control term, a mean over every round."""
        ips = self.inverse_propensity * jeffreys(self.matched_clicks, self.rounds, n, rng)
        spread = self.control.std(ddof=1) / np.sqrt(self.rounds)
        return {
            "replay": jeffreys(self.matched_clicks, self.matched, n, rng),
            "ips": ips,
            "dr": ips + rng.normal(self.control.mean(), spread, n),
        }


def jeffreys(successes: int, trials: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of a click rate from its posterior under the Jeffreys prior Beta(1/2, 1/2).

    Not a percentile bootstrap of rounds: resampling cannot draw clicks that did not
    happen, so 0 clicks in 110 matched rounds would get the interval [0, 0] and look
    worse than random, when 0 is what a 0.4% click rate gives most of the time. The
    Jeffreys interval keeps close to its nominal coverage down to zero counts.
    """
    return rng.beta(successes + 0.5, max(trials - successes, 0) + 0.5, n)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


@dataclass(frozen=True)
class Row:
    policy: str
    estimator: str
    ctr: Interval
    lift: Interval  # policy CTR minus the random log's CTR, paired
    matched_rounds: int
    matched_clicks: int

    @property
    def verdict(self) -> str:
        if self.lift.contains_zero:
            return "not distinguishable from random"
        return "above random" if self.lift.value > 0 else "below random"


@dataclass(frozen=True)
class Reference:
    name: str
    rounds: int
    clicks: int
    ctr: Interval
    lift: Interval | None


@dataclass(frozen=True)
class Report:
    campaign: str
    n_rounds: int
    n_clicks: int
    n_items: int
    seed: int
    draws: int
    # each lift interval's level: 1 - 0.05 / the number of policies in the table
    lift_level: float
    rows: list[Row]
    references: list[Reference]

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        for row, data in zip(self.rows, body["rows"], strict=True):
            data["verdict"] = row.verdict
        return body


def popularity_lists(campaign: Campaign, encoder: UserFeatureEncoder) -> dict[str, list[int]]:
    """Ranked lists per segment from the campaign's *bts* log: data the evaluation on the
    random log never sees, as a batch job's model trained on earlier traffic."""
    rankings = rank_segments([load_rounds(campaign, "bts")], encoder, k=3)
    return {ranking.segment: ranking.items for ranking in rankings}


def make_policy(name: str, log: LoggedRounds, encoder: UserFeatureEncoder, dim: int) -> Policy:
    if name == "random":
        return UniformRandom(log.n_items)
    if name == "popularity":
        return BatchPopularity(popularity_lists(log.campaign, encoder), encoder, log.campaign)
    from rtml.shared.bandits.contextual import make_contextual_policy

    contextual_name, params = CONTEXTUAL[name]
    return make_contextual_policy(contextual_name, log.n_items, dim, **params)


def evaluate_campaign(
    campaign: Campaign,
    policies: Sequence[str] = POLICIES,
    seed: int = 0,
    draws: int = 10_000,
    on_policy: Callable[[str], None] | None = None,
) -> Report:
    log = load_rounds(campaign, "random")
    encoder = UserFeatureEncoder.of_campaign(campaign)
    context = contexts(log, encoder)
    reward_model = cross_fitted_reward_model(log.items, log.clicks, log.n_items)
    *seeds, interval_seed = np.random.SeedSequence(seed).spawn(len(policies) + 1)
    counts = {}
    for name, policy_seed in zip(policies, seeds, strict=True):
        if on_policy is not None:
            on_policy(name)
        policy = make_policy(name, log, encoder, context.shape[1])
        rng = np.random.default_rng(policy_seed)
        chosen = replay_pass(policy, context, log.items, log.clicks, rng)
        counts[name] = Counts.of(chosen, log.items, log.clicks, log.propensities, reward_model)
    return _report(log, counts, draws, np.random.default_rng(interval_seed), seed)


def interval(point: float, draws: np.ndarray, miss: float = 0.05) -> Interval:
    """The central 1 - ``miss`` of the draws, stretched to hold the point estimate: with
    zero clicks the posterior's lowest quantiles are just above 0, where the count's own
    interval starts at 0 (as in Brown, Cai & DasGupta's Jeffreys interval)."""
    low, high = np.percentile(draws, [50 * miss, 100 - 50 * miss])
    return Interval(float(point), float(min(low, point)), float(max(high, point)))


def _report(
    log: LoggedRounds,
    counts: dict[str, Counts],
    n_draws: int,
    rng: np.random.Generator,
    seed: int,
) -> Report:
    # the matched rounds are a few % of the random log's rounds: drawing the policy and
    # the baseline independently slightly overstates the lift's spread, never understates it
    baseline = jeffreys(log.n_clicks, log.n_rounds, n_draws, rng)
    # one lift verdict per policy: Bonferroni keeps the chance of any false "above/below
    # random" in the table at 5% (a sixth policy would otherwise add its own 5%)
    lift_miss = LIFT_FAMILY_MISS / len(counts)
    rows = []
    for name, policy_counts in counts.items():
        points = policy_counts.estimates()
        draws = policy_counts.draws(n_draws, rng)
        for estimator in ESTIMATORS:
            point = points[estimator]
            rows.append(
                Row(
                    policy=name,
                    estimator=estimator,
                    ctr=interval(point, draws[estimator]),
                    lift=interval(point - log.ctr, draws[estimator] - baseline, lift_miss),
                    matched_rounds=policy_counts.matched,
                    matched_clicks=policy_counts.matched_clicks,
                )
            )
    bts = load_rounds(log.campaign, "bts")
    bts_draws = jeffreys(bts.n_clicks, bts.n_rounds, n_draws, rng)
    references = [
        Reference(
            "random (logged, on-policy)",
            log.n_rounds,
            log.n_clicks,
            interval(log.ctr, baseline),
            None,
        ),
        Reference(
            "bts (logged, on-policy)",
            bts.n_rounds,
            bts.n_clicks,
            interval(bts.ctr, bts_draws),
            # two independent logs: independent draws are exact here
            interval(bts.ctr - log.ctr, bts_draws - baseline),
        ),
    ]
    return Report(
        campaign=log.campaign,
        n_rounds=log.n_rounds,
        n_clicks=log.n_clicks,
        n_items=log.n_items,
        seed=seed,
        draws=n_draws,
        lift_level=1.0 - lift_miss,
        rows=rows,
        references=references,
    )


def format_report(report: Report) -> str:
    pct = 100.0
    policies = dict.fromkeys(row.policy for row in report.rows)
    lines = [
        f"OBD campaign={report.campaign}: uniform-random log of {report.n_rounds} rounds "
        f"(every position a round), {report.n_clicks} clicks, CTR "
        f"{report.n_clicks / report.n_rounds * pct:.3f}%, {report.n_items} items",
        f"A small sample: a uniform policy matches a given item in ~1/{report.n_items} of the "
        "rounds, so replay rests on a handful of matched clicks and the intervals are wide.",
        f"CTR in % with 95% intervals, lift (policy minus the random log's CTR) in % with "
        f"{report.lift_level * 100:g}% intervals (Bonferroni over {len(policies)} "
        f"polic{'y' if len(policies) == 1 else 'ies'}), "
        f"from {report.draws} draws of the click counts' Jeffreys posteriors, seed {report.seed}",
        "The intervals cover the logs' sampling noise; a learning policy's result also varies "
        "with --seed (its own randomness).",
        "",
        f"{'policy':<15} {'est.':<6} {'matched':>7} {'clicks':>6}  {'CTR %':>6} "
        f"{'95% CI':<16} {'lift %':>7} {f'{report.lift_level * 100:g}% CI':<17} verdict",
    ]
    for row in report.rows:
        lines.append(
            f"{row.policy:<15} {row.estimator:<6} {row.matched_rounds:>7} "
            f"{row.matched_clicks:>6}  {row.ctr.value * pct:>6.3f} {_span(row.ctr):<16} "
            f"{row.lift.value * pct:>+7.3f} {_span(row.lift):<17} {row.verdict}"
        )
    lines += ["", "reference (on-policy, all rounds of each log):"]
    for ref in report.references:
        line = (
            f"{ref.name:<27} {ref.rounds:>6} rounds {ref.clicks:>4} clicks  CTR "
            f"{ref.ctr.value * pct:.3f}% {_span(ref.ctr)}"
        )
        if ref.lift is not None:
            verdict = (
                "not distinguishable from random"
                if ref.lift.contains_zero
                else ("above random" if ref.lift.value > 0 else "below random")
            )
            line += f"  lift {ref.lift.value * pct:+.3f} {_span(ref.lift)} {verdict}"
        lines.append(line)
    return "\n".join(lines)


def _span(value: Interval) -> str:
    return f"[{value.low * 100:+.3f}, {value.high * 100:+.3f}]".replace("+", " ", 2)


def plot_reports(reports: Sequence[Report], path: str) -> None:
    """CTR with its interval per policy and estimator, one panel per campaign (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(reports), figsize=(6 * len(reports), 4.5), squeeze=False)
    for axis, report in zip(axes[0], reports, strict=True):
        policies = list(dict.fromkeys(row.policy for row in report.rows))
        for offset, estimator in enumerate(ESTIMATORS):
            rows = [r for r in report.rows if r.estimator == estimator]
            x = np.arange(len(rows)) + (offset - 1) * 0.25
            values = np.array([r.ctr.value for r in rows]) * 100
            errors = np.array([[r.ctr.value - r.ctr.low, r.ctr.high - r.ctr.value] for r in rows]).T
            axis.errorbar(x, values, yerr=errors * 100, fmt="o", capsize=3, label=estimator)
        for ref, style in zip(report.references, ("--", ":"), strict=True):
            axis.axhline(ref.ctr.value * 100, linestyle=style, color="grey", label=ref.name)
        axis.set_xticks(np.arange(len(policies)), policies, rotation=20)
        axis.set_ylabel("estimated CTR (%)")
        axis.set_title(f"OBD {report.campaign}: {report.n_rounds} rounds, {report.n_clicks} clicks")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
