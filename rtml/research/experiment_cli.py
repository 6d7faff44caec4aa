"""``rtml experiment ...``: offline experiments on routing policies."""

from __future__ import annotations

import json

import click

from rtml.research.experiment import format_report, plot, run_ab_vs_bandit


@click.group("experiment")
def experiment() -> None:
    """Offline experiments on online-evaluation methods."""


@experiment.command("ab-vs-bandit")
@click.option(
    "--rate", type=float, default=0.01, show_default=True, help="conversion rate of arm A"
)
@click.option(
    "--lift", type=float, default=0.05, show_default=True, help="relative lift of arm B over A"
)
@click.option(
    "--delta",
    type=float,
    default=0.05,
    show_default=True,
    help="error probability for best-arm identification",
)
@click.option("--runs", type=int, default=100, show_default=True)
@click.option(
    "--cap",
    type=int,
    default=10_000_000,
    show_default=True,
    help="samples after which a run is undecided",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--batch", type=int, default=1000, show_default=True, help="samples between posterior updates"
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="write a PNG here"
)
@click.option("--json", "as_json", is_flag=True, help="print the whole table as JSON")
def ab_vs_bandit(
    rate: float, lift: float, delta: float, runs: int, cap: int, seed: int, batch: int,
    plot_path: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Fixed-horizon A/B vs sequential tests vs Thompson sampling, judged on samples,
    correctness and regret against the information-theoretic lower bound."""
    result = run_ab_vs_bandit(
        rates=(rate, rate * (1 + lift)), delta=delta, runs=runs, cap=cap, seed=seed, batch=batch
    )
    if plot_path:
        plot(result, plot_path)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    else:
        click.echo(format_report(result))
