"""``rtml evaluate recs`` (offline evaluation on the OBD logs) and ``rtml batch predict``."""

from __future__ import annotations

import asyncio
import json
import time

import click
from aiokafka.errors import KafkaError

from rtml.shared.errors import RtmlError
from rtml.shared.settings import get_settings
from rtml.tasks.recs.obd import CAMPAIGNS
from rtml.tasks.recs.offline import POLICIES, evaluate_campaign, format_report, plot_reports


@click.command("recs")
@click.option("--campaign", type=click.Choice([*CAMPAIGNS, "every"]), default="all",
              show_default=True, help="the OBD campaign; 'every' evaluates all three")  # fmt: skip
@click.option("--policy", "policies", type=click.Choice(POLICIES), multiple=True,
              help="policies to evaluate (repeatable) [default: all five]")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--draws", "--bootstrap", "draws", type=click.IntRange(100), default=10_000,
              show_default=True,
              help="draws of the clicks' Jeffreys posteriors per 95% interval")  # fmt: skip
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write a PNG of the estimates and their intervals here")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def evaluate_recs(
    campaign: str, policies: tuple[str, ...], seed: int, draws: int, plot: str | None, as_json: bool
) -> None:
    """Replay (Li et al. 2011), IPS and doubly-robust estimates of each policy's CTR on the
    uniform-random Open Bandit Dataset log, with 95% intervals and the lift over random."""
    campaigns = CAMPAIGNS if campaign == "every" else (campaign,)
    reports = []
    for name in campaigns:
        started = time.perf_counter()
        report = evaluate_campaign(
            name,
            policies or POLICIES,
            seed=seed,
            draws=draws,
            on_policy=lambda policy, name=name: click.echo(f"{name}: replaying {policy}", err=True),
        )
        click.echo(f"{name}: done in {time.perf_counter() - started:.1f} s", err=True)
        reports.append(report)
        if not as_json:
            click.echo(format_report(report) + "\n")
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    if plot:
        plot_reports(reports, plot)
        click.echo(f"wrote {plot}", err=True)


@click.command("predict")
@click.option("--task", type=click.Choice(["recs"]), required=True,
              help="the task whose batch predictions to compute (recs only, for now)")  # fmt: skip
@click.option("--campaign", type=click.Choice(CAMPAIGNS), default="all", show_default=True)
@click.option("--top-k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=None,
              help="repeat every SECONDS until interrupted [default: run once]")  # fmt: skip
@click.option("--runs", type=click.IntRange(1), default=None,
              help="with --interval, stop after this many runs")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="compute and print, publish nothing")
def batch_predict(
    task: str,
    campaign: str,
    top_k: int,
    interval: float | None,
    runs: int | None,
    dry_run: bool,
) -> None:
    """Top items per known user segment, and the global popularity list for every other
    visitor, from the Open Bandit Dataset logs, published to rtml.batch.predictions."""
    from rtml.tasks.recs.batch import batch_predictions, publish

    run = 0
    while True:
        run += 1
        started = time.perf_counter()
        predictions = batch_predictions(campaign, top_k)
        click.echo(
            f"run {run}: ranked the top {top_k} items of {len(predictions) - 1} segments "
            f"and the global list ({campaign}) in {time.perf_counter() - started:.2f} s"
        )
        if dry_run:
            for p in predictions:
                click.echo(f"{p.segment}: {p.items} ({p.n_rounds} rounds, {p.n_clicks} clicks)")
        else:
            try:
                sent = asyncio.run(publish(get_settings(), predictions))
            except (RtmlError, KafkaError) as exc:
                raise click.ClickException(f"publishing failed: {exc}") from exc
            click.echo(f"run {run}: published {sent} lists ({len(predictions) - sent} unchanged)")
        if interval is None or (runs is not None and run >= runs):
            return
        time.sleep(interval)
