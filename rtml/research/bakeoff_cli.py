"""``rtml evaluate cb-bakeoff``: the contextual-bandit bake-off against VW and MABWiser."""

from __future__ import annotations

import json

import click

from rtml.research.bakeoff import (
    DATASETS,
    DEFAULT_SEEDS,
    FAMILIES,
    QUICK_ROUNDS,
    BakeoffError,
    Setting,
    format_report,
    run_bakeoff,
)


@click.command("cb-bakeoff")
@click.option(
    "--seeds",
    type=int,
    default=None,
    help=f"passes per configuration, seeds 0..N-1 [default: {DEFAULT_SEEDS}; 3 with --quick]",
)
@click.option(
    "--datasets",
    default=None,
    help=f"comma-separated, from {','.join(DATASETS)} [default: all; digits with --quick]",
)
@click.option(
    "--quick",
    is_flag=True,
    help=f"reduced setting (CI): digits, 3 seeds, one configuration per method,"
    f" the first {QUICK_ROUNDS} rounds of each pass",
)
@click.option(
    "--methods",
    default=",".join(FAMILIES),
    show_default=True,
    help="comma-separated families to run; the skyline and uniform random always run",
)
@click.option("--json", "as_json", is_flag=True, help="print the whole report as JSON")
def cb_bakeoff(
    seeds: int | None, datasets: str | None, quick: bool, methods: str, as_json: bool
) -> None:
    """Supervised-to-bandit bake-off (Bietti, Agarwal & Langford): progressive reward and
    decisions/s of our contextual bandits, Vowpal Wabbit, MABWiser and the
    full-information skyline on scikit-learn's datasets."""
    base = Setting.reduced() if quick else Setting()
    try:
        setting = Setting(
            datasets=tuple(datasets.split(",")) if datasets else base.datasets,
            seeds=base.seeds if seeds is None else seeds,
            quick=quick,
            families=tuple(methods.split(",")),
        )
        report = run_bakeoff(setting, progress=lambda line: click.echo(line, err=True))
    except BakeoffError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
