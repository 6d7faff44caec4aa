"""The router's core: one routing policy per task, fed by rewards and model announcements.

Nothing here knows Kafka or HTTP; the adapters (``app.py``, ``rewards.py``,
``models.py``, ``state.py``) feed it and ship what it returns.

- ``route`` picks an arm (a model version) for an enriched request and logs the
  probability the policy had of picking it (the propensity). A task without
  arms routes to the prediction service's champion (policy "champion").
- ``on_reward`` folds a reward in once per log position and once per request
  id (``ledger.RewardLedger``).
- ``on_announcement``: a registered or promoted version joins as an arm with an
  exploration floor, a promoted one becomes the champion, a retired one leaves.
- ``promotions_due``: every ``promote_every`` rewards of a task, the "value
  remaining" rule on its posterior. A policy that has none (A/B, epsilon-greedy,
  UCB1) is judged by a shadow Thompson Beta-Bernoulli posterior of the same
  rewards, built from the policy's own reward counts when the rule is checked:
  it cannot drift from the policy and needs no checkpoint of its own.
- ``with_router_timings`` adds the router's hops to a routed request's timings.
- ``state`` / ``restore``: the checkpoint of a task (posterior, counters and
  the rewards offsets folded), as a RouterState.

A task configured with a contextual policy (``contextual.CONTEXTUAL_POLICY_NAMES``;
its spec declares ``router.items``) routes items instead of model versions: each
request gets the item the policy chooses for its context and the prediction
service's champion answers (``contextual_routing.py``). Rewards are folded through the same
ledger; announcements only move its champion, and promotions do not apply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from rtml.services.router.contextual_routing import (
    ContextSpec,
    ContextualArms,
    is_contextual,
)
from rtml.services.router.ledger import Admission, LogPosition, RewardLedger
from rtml.shared.bandits.policies import (
    Policy,
    PolicyError,
    PromotionRule,
    ThompsonBeta,
    ThompsonGaussian,
    UnknownArm,
    make_policy,
    p_best,
    promotion_decision,
)
from rtml.shared.contracts import (
    ArmSummary,
    ModelAnnouncement,
    PredictEnriched,
    PredictRouted,
    Reward,
    RouterState,
    Task,
)
from rtml.shared.logging import get_logger
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import tasks
from rtml.shared.tasks.spec import TaskSpec
from rtml.shared.timings import ROUTING, TO_ROUTER, ms, with_wait

log = get_logger(__name__)

# posterior draws behind P(best) as exported: a standard error of at most 0.005
P_BEST_DRAWS = 10_000
# what PredictRouted.policy says when no arm exists and the prediction service's champion answers
CHAMPION_FALLBACK = "champion"
# per-task overrides of the spec's router defaults ({task}: the task's name, upper case)
POLICY_ENV = "RTML_ROUTER_POLICY_{task}"
PARAMS_ENV = "RTML_ROUTER_PARAMS_{task}"
PRIOR_ENV = "RTML_ROUTER_PRIOR_{task}"
ITEMS_ENV = "RTML_ROUTER_{task}_ITEMS"
CATEGORIES_ENV = "RTML_ROUTER_{task}_CATEGORIES"


@dataclass(frozen=True)
class TaskOverride:
    """A per-task router setting, for ``rtml config`` and the settings table."""

    template: str
    meaning: str
    # what the task's spec gives when the variable is unset; None: not a setting of this task
    spec_default: Callable[[TaskSpec], object]

    def variable(self, task: str) -> str:
        return self.template.format(task=task.upper())


TASK_OVERRIDES = (
    TaskOverride(
        POLICY_ENV,
        "the task's routing policy: ab, epsilon_greedy, ucb1, thompson_beta, thompson_gaussian "
        "(versions) or linucb, linear_ts, epsilon_greedy_linear (items)",
        lambda spec: spec.router.policy,
    ),
    TaskOverride(
        PARAMS_ENV,
        'the policy\'s parameters, JSON (e.g. {"epsilon": 0.05})',
        lambda spec: dict(spec.router.params),
    ),
    TaskOverride(
        PRIOR_ENV,
        'the prior a newly announced version joins with, JSON (e.g. {"alpha": 1, "beta": 1})',
        lambda spec: dict(spec.router.prior),
    ),
    TaskOverride(
        ITEMS_ENV,
        "how many items a contextual policy routes over (a task with item arms)",
        lambda spec: spec.router.items.count if spec.router.items else None,
    ),
    TaskOverride(
        CATEGORIES_ENV,
        "categories of each categorical context feature, JSON list (a task with item arms)",
        lambda spec: list(spec.router.items.categories) if spec.router.items else None,
    ),
)


@dataclass(frozen=True)
class TaskConfig:
    policy: str = "thompson_beta"
    params: Mapping[str, Any] = field(default_factory=dict)
    # the prior a newly announced arm joins with (keys depend on the policy)
    prior: Mapping[str, float] = field(default_factory=dict)
    # a new arm's exploration floor: at least min_share of traffic until min_pulls rewards
    min_share: float = 0.05
    min_pulls: int = 200
    # the items a contextual policy routes over; None: the task has none
    context: ContextSpec | None = None

    @classmethod
    def of(
        cls,
        spec: TaskSpec,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TaskConfig:
        """The spec's router defaults, overridden by the task's RTML_ROUTER_* variables
        (``environ``) and the new-arm floor of ``settings``."""
        environ = {} if environ is None else environ
        router, items = spec.router, spec.router.items

        def override(template: str) -> str | None:
            return environ.get(template.format(task=spec.name.upper()))

        context = None
        if items is not None:
            count, categories = override(ITEMS_ENV), override(CATEGORIES_ENV)
            context = ContextSpec(
                n_items=items.count if count is None else int(count),
                categorical=items.categorical,
                categories=(
                    items.categories
                    if categories is None
                    else tuple(_json(CATEGORIES_ENV, spec, categories))
                ),
                numeric=items.numeric,
            )
        params, prior = override(PARAMS_ENV), override(PRIOR_ENV)
        floor = {} if settings is None else {
            "min_share": settings.router_new_arm_min_share,
            "min_pulls": settings.router_new_arm_min_pulls,
        }  # fmt: skip
        return cls(
            policy=override(POLICY_ENV) or router.policy,
            params=dict(router.params) if params is None else _json(PARAMS_ENV, spec, params),
            prior=dict(router.prior) if prior is None else _json(PRIOR_ENV, spec, prior),
            context=context,
            **floor,
        )


def _json(template: str, spec: TaskSpec, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        name = template.format(task=spec.name.upper())
        raise PolicyError(f"{name} is not JSON: {exc}") from exc


@dataclass(frozen=True)
class RouterConfig:
    # every loaded task with its spec's defaults
    tasks: Mapping[Task, TaskConfig] = field(
        default_factory=lambda: {name: TaskConfig.of(spec) for name, spec in tasks().items()}
    )
    dedupe_window: int = 10_000
    promote_every: int = 1000
    promotion_rule: PromotionRule = PromotionRule()

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> RouterConfig:
        environ = os.environ if environ is None else environ
        return cls(
            tasks={name: TaskConfig.of(spec, settings, environ) for name, spec in tasks().items()},
            dedupe_window=settings.router_dedupe_window,
            promote_every=settings.router_promote_every,
            promotion_rule=PromotionRule(
                min_p_best=settings.router_promote_min_p_best,
                max_loss=settings.router_promote_max_loss,
            ),
        )


class RewardOutcome(Enum):
    COUNTED = "counted"
    DUPLICATE = "duplicate"
    # folded before the checkpoint the router started from
    CHECKPOINTED = "checkpointed"
    # an arm the task does not have (a late reward for a retired version)
    UNKNOWN_ARM = "unknown_arm"


@dataclass(frozen=True)
class PromotionProposal:
    task: Task
    arm: str
    reason: str


@dataclass
class _TaskRouter:
    config: TaskConfig
    policy: Policy
    ledger: RewardLedger
    champion: str | None = None
    decisions: int = 0
    rewards_since_promotion_check: int = 0


@dataclass
class _ContextualTask:
    arms: ContextualArms
    ledger: RewardLedger
    champion: str | None = None
    decisions: int = 0


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._tasks = {
            task: _TaskRouter(
                task_config, new_policy(task_config), RewardLedger(config.dedupe_window)
            )
            for task, task_config in config.tasks.items()
            if not is_contextual(task_config.policy)
        }
        self._contextual = {
            task: _ContextualTask(new_contextual_arms(task, task_config), self._new_ledger())
            for task, task_config in config.tasks.items()
            if is_contextual(task_config.policy)
        }

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self.config.tasks)

    def arms(self, task: Task) -> tuple[str, ...]:
        if task in self._contextual:
            return self._contextual[task].arms.arms
        return self._tasks[task].policy.arms

    def champion(self, task: Task) -> str | None:
        return self._routing(task).champion

    def _routing(self, task: Task) -> _TaskRouter | _ContextualTask:
        return self._contextual.get(task) or self._tasks[task]

    def _new_ledger(self, next_offsets: Mapping[int, int] | None = None) -> RewardLedger:
        return RewardLedger(self.config.dedupe_window, next_offsets)

    # --- routing --------------------------------------------------------------

    def route(self, enriched: PredictEnriched, rng: np.random.Generator) -> PredictRouted:
        """Raises PolicyError for a request a contextual policy cannot route (no context)."""
        # the field values as stored; dict(enriched) would cost several times the whole
        # choice, as it first probes for a keys() method through pydantic's __getattr__
        fields = enriched.__dict__
        contextual = self._contextual.get(enriched.task)
        if contextual is not None:
            routed = contextual.arms.route(enriched, fields, rng)
            contextual.decisions += 1
            return routed
        routing = self._tasks[enriched.task]
        routing.decisions += 1
        if not routing.policy.arms:
            return PredictRouted(**fields, policy=CHAMPION_FALLBACK)
        decision = routing.policy.choose(rng)
        return PredictRouted(
            **fields,
            model_version=decision.arm,
            arm=decision.arm,
            propensity=decision.propensity,
            policy=routing.policy.name,
        )

    # --- rewards --------------------------------------------------------------

    def on_reward(self, reward: Reward, position: LogPosition) -> RewardOutcome:
        """Fold ``reward`` (read at ``position`` of the rewards log) into its task's posterior.

        Raises PolicyError for a reward the policy cannot take (e.g. 0.5 for a
        Beta-Bernoulli arm); its position and id count as seen all the same.
        """
        routing = self._routing(reward.task)
        admission = routing.ledger.admit(position, reward.id)
        if admission is Admission.CHECKPOINTED:
            return RewardOutcome.CHECKPOINTED
        if admission is Admission.DUPLICATE:
            return RewardOutcome.DUPLICATE
        if isinstance(routing, _ContextualTask):
            try:
                routing.arms.update(reward)
            except UnknownArm:
                return RewardOutcome.UNKNOWN_ARM
            return RewardOutcome.COUNTED
        if reward.arm not in routing.policy.arms:
            return RewardOutcome.UNKNOWN_ARM
        routing.policy.update(reward.arm, reward.reward)
        routing.rewards_since_promotion_check += 1
        return RewardOutcome.COUNTED

    def resume_offset(self, partition: int) -> int:
        """Where reading rewards ``partition`` must start so that every task folds exactly
        the rewards after its checkpoint, with its duplicate window rebuilt."""
        ledgers = [
            routing.ledger for routing in (*self._tasks.values(), *self._contextual.values())
        ]
        return min(ledger.resume_offset(partition) for ledger in ledgers)

    # --- arms -----------------------------------------------------------------

    def on_announcement(self, announcement: ModelAnnouncement) -> None:
        contextual = self._contextual.get(announcement.task)
        if contextual is not None:
            # versions are not arms here: the champion answers whatever item is chosen
            if announcement.action == "promoted":
                contextual.champion = announcement.model_version
            return
        routing = self._tasks[announcement.task]
        version = announcement.model_version
        if announcement.action == "retired":
            routing.policy.remove_arm(version)
            return
        if version not in routing.policy.arms:
            self._add_arm(routing, version)
        if announcement.action == "promoted":
            routing.champion = version

    def set_champion(self, task: Task, version: str) -> None:
        self._routing(task).champion = version

    def _add_arm(self, routing: _TaskRouter, arm: str) -> None:
        config = routing.config
        # the floors of all arms may not exceed the whole traffic: when a long run of
        # versions has used them up, a newcomer explores through the policy alone
        floors = sum(entry["min_share"] for entry in routing.policy.snapshot()["arms"])
        min_share = max(0.0, min(config.min_share, 1.0 - floors))
        if min_share < config.min_share:
            log.warning("exploration_floor_exhausted", arm=arm, min_share=min_share)
        routing.policy.add_arm(arm, min_share=min_share, min_pulls=config.min_pulls, **config.prior)

    # --- promotion ------------------------------------------------------------

    def promotions_due(self) -> list[PromotionProposal]:
        """The tasks whose rule, checked now that ``promote_every`` rewards came in, names
        a champion other than the current one."""
        proposals = []
        rule = self.config.promotion_rule
        for task, routing in self._tasks.items():
            if routing.rewards_since_promotion_check < self.config.promote_every:
                continue
            routing.rewards_since_promotion_check = 0
            if len(routing.policy.arms) < 2:
                continue  # a lone arm is best by default, which proves nothing
            try:
                verdict = promotion_decision(promotion_posterior(routing.policy), rule)
            # e.g. a relative loss on rewards that can be <= 0, or a Beta shadow of rewards
            # that are not 0/1: the rule cannot speak, routing goes on
            except (PolicyError, ValueError) as exc:
                log.warning("promotion_check_failed", task=task, error=str(exc))
                continue
            if verdict.promote and verdict.champion != routing.champion:
                pulls = routing.policy.summary()[verdict.champion]["pulls"]
                reason = (
                    f"P(best)={verdict.p_best:.3f} >= {rule.min_p_best} and expected "
                    f"{'relative ' if rule.relative else ''}loss {verdict.loss:.4g} < "
                    f"{rule.max_loss} after {pulls} rewards of this arm"
                )
                proposals.append(PromotionProposal(task, verdict.champion, reason))
        return proposals

    def p_best(self, task: Task) -> dict[str, float]:
        """Each version arm's probability of being the best, on the posterior the promotion
        rule reads; empty for a task that routes items, or whose rewards that posterior
        cannot take."""
        routing = self._tasks.get(task)
        if routing is None or not routing.policy.arms:
            return {}
        try:
            draws = promotion_posterior(routing.policy).posterior_draws(
                P_BEST_DRAWS, np.random.default_rng(0)
            )
        except (PolicyError, ValueError):
            return {}
        return dict(zip(routing.policy.arms, p_best(draws).tolist(), strict=True))

    # --- checkpoints ----------------------------------------------------------

    def arm_summaries(self, task: Task) -> list[ArmSummary]:
        """Each arm's rewards, posterior mean with its 95% interval, and traffic share now
        (for items: mean reward and share of the decisions so far)."""
        if task in self._contextual:
            return self._contextual[task].arms.summaries()
        policy = self._tasks[task].policy
        shares = policy.probabilities() if policy.arms else {}
        return [
            ArmSummary(arm=arm, **summary, share=min(1.0, shares[arm]))
            for arm, summary in policy.summary().items()
        ]

    def state(self, task: Task, now: float) -> RouterState:
        contextual = self._contextual.get(task)
        if contextual is not None:
            return RouterState(
                ts=now,
                task=task,
                policy=contextual.arms.name,
                decisions=contextual.decisions,
                arms=contextual.arms.summaries(),
                champion=contextual.champion,
                snapshot=contextual.arms.snapshot(),
                reward_offsets={str(p): o for p, o in contextual.ledger.next_offsets().items()},
            )
        routing = self._tasks[task]
        policy = routing.policy
        return RouterState(
            ts=now,
            task=task,
            policy=policy.name,
            decisions=routing.decisions,
            arms=self.arm_summaries(task),
            champion=routing.champion,
            snapshot=policy.snapshot(),
            reward_offsets={str(p): o for p, o in routing.ledger.next_offsets().items()},
        )

    def restore(self, state: RouterState) -> None:
        """Start ``state.task`` from a checkpoint: posterior, decisions, champion, offsets.

        A checkpoint of another policy than the configured one (the configuration
        changed across the restart) hands over its arms' reward statistics, with the
        configured policy's priors: the evidence survives a change of policy.
        A contextual task restores only a checkpoint of its own policy; from any
        other it starts afresh and folds every reward on the log.
        """
        if state.task in self._contextual:
            self._restore_contextual(self._contextual[state.task], state)
            return
        routing = self._tasks[state.task]
        if state.snapshot.get("policy") == routing.policy.name:
            routing.policy.restore(state.snapshot)
        else:
            log.warning(
                "policy_changed_since_checkpoint",
                task=state.task,
                checkpointed=state.snapshot.get("policy"),
                configured=routing.policy.name,
            )
            carry_statistics(state.snapshot, routing.policy, routing.config.prior)
        routing.decisions = state.decisions
        routing.champion = state.champion
        routing.ledger = self._new_ledger({int(p): o for p, o in state.reward_offsets.items()})

    def _restore_contextual(self, routing: _ContextualTask, state: RouterState) -> None:
        if state.snapshot.get("policy") != routing.arms.name:
            log.warning(
                "policy_changed_since_checkpoint",
                task=state.task,
                checkpointed=state.snapshot.get("policy"),
                configured=routing.arms.name,
                refold="every reward on the log",
            )
            routing.champion = state.champion
            return
        routing.arms.restore(state.snapshot)
        routing.decisions = state.decisions
        routing.champion = state.champion
        routing.ledger = self._new_ledger({int(p): o for p, o in state.reward_offsets.items()})


def with_router_timings(routed: PredictRouted, seen_at: float, now: float) -> PredictRouted:
    """``routed`` with the router's hops: ``to_router``, the wait until the router saw the
    request at ``seen_at``, then ``routing``, until it was routed at ``now`` (decoding,
    and the requests routed before it in the same batch, included)."""
    timings = with_wait(routed.timings_ms, TO_ROUTER, routed.received_at, seen_at)
    timings[ROUTING] = ms(now - seen_at)
    return routed.model_copy(update={"timings_ms": timings})


def new_contextual_arms(task: Task, config: TaskConfig) -> ContextualArms:
    if config.context is None:
        raise PolicyError(
            f"contextual policy {config.policy!r} routes items: task {task} declares none "
            "(router.items of its spec)"
        )
    return ContextualArms(config.policy, config.params, config.context)


def new_policy(config: TaskConfig) -> Policy:
    """The task's policy, without arms; a prior the policy would refuse fails now, at
    start, rather than when the next model version is announced."""
    make_policy(config.policy, **config.params).add_arm("prior-check", **config.prior)
    return make_policy(config.policy, **config.params)


def carry_statistics(
    snapshot: Mapping[str, Any], target: Policy, prior: Mapping[str, float]
) -> None:
    """Give ``target`` the arms and reward statistics of another policy's snapshot."""
    target.restore(
        {
            "policy": target.name,
            "version": snapshot["version"],
            "arms": [{**arm, "prior": dict(prior)} for arm in snapshot["arms"]],
        }
    )


def promotion_posterior(policy: Policy) -> ThompsonBeta | ThompsonGaussian:
    """The posterior the promotion rule reads: a Thompson policy's own, otherwise a
    Beta-Bernoulli one (Beta(1, 1) priors) over the same reward counts -- so rewards
    of a non-Thompson policy must be 0/1, as both rtml tasks' are."""
    if isinstance(policy, ThompsonBeta | ThompsonGaussian):
        return policy
    shadow = ThompsonBeta()
    carry_statistics(policy.snapshot(), shadow, {})
    return shadow
