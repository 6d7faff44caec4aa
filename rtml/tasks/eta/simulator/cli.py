"""``rtml simulate``: run the eta marketplace against a stack, or into an event log."""

from __future__ import annotations

import asyncio

import click
from pydantic import SecretStr

from rtml.client import AsyncClient
from rtml.shared.eventlog import write_event_log
from rtml.shared.settings import get_settings
from rtml.tasks.eta.simulator.driver import drive
from rtml.tasks.eta.simulator.world import SCENARIOS, SimConfig, simulate


@click.command("simulate")
@click.option("--scenario", type=click.Choice(SCENARIOS), default="none", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hours", type=float, default=4.0, show_default=True, help="simulated hours")
@click.option(
    "--shift-at",
    type=float,
    default=2.0,
    show_default=True,
    help="simulated hours before the scenario's shift",
)
@click.option("--orders-per-hour", type=float, default=120.0, show_default=True)
@click.option(
    "--speedup",
    type=float,
    default=60.0,
    show_default=True,
    help="event time / wall time; 0 = as fast as possible",
)
@click.option(
    "--target", default=None, help="ingestion URL [default: http://127.0.0.1:$RTML_INGEST_PORT]"
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="write an event log file instead of sending",
)
def simulate_command(
    scenario: str, seed: int, hours: float, shift_at: float, orders_per_hour: float,
    speedup: float, target: str | None, out: str | None,
) -> None:  # fmt: skip
    """Seeded food-delivery marketplace: events and predict requests in event time."""
    config = SimConfig(
        seed=seed, scenario=scenario, shift_at_s=shift_at * 3600, orders_per_hour=orders_per_hour
    )  # fmt: skip
    duration_s = hours * 3600
    if out:
        with click.progressbar(
            simulate(config, duration_s), label="simulating", length=None
        ) as messages:
            written = write_event_log(out, messages)
        click.echo(f"wrote {written} messages to {out}")
        return
    settings = get_settings()
    url = target or f"http://127.0.0.1:{settings.ingest_port}"
    stats = asyncio.run(_send(config, duration_s, url, settings.ingest_token, speedup))
    click.echo(
        f"\nsent {stats.events} events and {stats.predict_requests} predict requests "
        f"in {stats.seconds:.1f}s ({stats.failed} failed)"
    )
    if stats.failed:
        raise SystemExit(1)


async def _send(
    config: SimConfig, duration_s: float, url: str, token: SecretStr | None, speedup: float
):
    with click.progressbar(length=int(duration_s), label="simulated seconds") as bar:
        done = [0]

        def advance(message) -> None:
            elapsed = int(message.ts - config.start_ts)
            bar.update(elapsed - done[0])
            done[0] = elapsed

        async with AsyncClient(url, token) as client:
            return await drive(simulate(config, duration_s), client, speedup, on_progress=advance)
