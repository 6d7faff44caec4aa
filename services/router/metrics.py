"""The router's Prometheus metrics that carry an arm (a model version, or an item).

Decisions are counted per arm; a retired version's series are removed with it
(``models.py``). The posterior gauges are read from the router at scrape time, so
they only ever name the arms it has.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rtml.services.router.handlers import Router
from rtml.shared.contracts import Task
from rtml.shared.metrics import forget_series

DECISIONS = Counter("rtml_router_decisions_total", "routing decisions", ["task", "arm"])


def forget_arm(task: Task, arm: str) -> None:
    forget_series(DECISIONS, task=task, arm=arm)


class PosteriorCollector(Collector):
    """Per-arm gauges read from the router at scrape time, so a retired arm's series go too."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "share": GaugeMetricFamily(
                "rtml_router_arm_share",
                "probability the policy routes to the arm now",
                labels=["task", "arm"],
            ),
            "mean": GaugeMetricFamily(
                "rtml_router_arm_posterior_mean",
                "posterior mean reward of the arm",
                labels=["task", "arm"],
            ),
            "ci_low": GaugeMetricFamily(
                "rtml_router_arm_ci_low",
                "lower end of the arm's 95% interval",
                labels=["task", "arm"],
            ),
            "ci_high": GaugeMetricFamily(
                "rtml_router_arm_ci_high",
                "upper end of the arm's 95% interval",
                labels=["task", "arm"],
            ),
            "pulls": GaugeMetricFamily(
                "rtml_router_arm_rewards", "rewards folded into the arm", labels=["task", "arm"]
            ),
        }
        p_best = GaugeMetricFamily(
            "rtml_router_arm_p_best",
            "posterior probability that the arm is the best version (the promotion rule's)",
            labels=["task", "arm"],
        )
        for task in self._router.tasks:
            for summary in self._router.arm_summaries(task):
                for name, gauge in gauges.items():
                    gauge.add_metric([task, summary.arm], float(getattr(summary, name)))
            for arm, probability in self._router.p_best(task).items():
                p_best.add_metric([task, arm], probability)
        yield from gauges.values()
        yield p_best
