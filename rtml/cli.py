"""The ``rtml`` command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, cast

import click

from rtml.shared.settings import Settings, get_settings


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from rtml.shared.build import git_commit, package_version

    commit = git_commit()
    click.echo(f"rtml {package_version()}" + (f" (commit {commit})" if commit else ""))
    ctx.exit()


@click.group()
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Print the version and commit, then exit.")  # fmt: skip
def main() -> None:
    """rtml: real-time machine learning on Kafka."""


@contextlib.contextmanager
def _broker_if_embedded(settings: Settings) -> Iterator[str]:
    """Start the embedded broker unless RTML_KAFKA_BOOTSTRAP names one."""
    from rtml.shared.embedded_broker import EmbeddedBroker

    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap
        return
    with EmbeddedBroker(port=settings.kafka_port) as broker:
        yield broker.bootstrap


def _stop_event() -> asyncio.Event:
    """Set by SIGTERM or SIGINT, also where SIGINT was ignored (a background job of a
    script): a stop request reaches ``rtml up`` however it was started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _run(main: Coroutine[Any, Any, int | None]) -> int:
    """``asyncio.run(main)``; a broker that cannot be started or reached is an error
    message and exit code 1, not a traceback."""
    from rtml.shared.errors import BrokerUnavailable

    try:
        return asyncio.run(main) or 0
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
def broker() -> None:
    """Run the embedded broker (memory only) on 127.0.0.1:$RTML_KAFKA_PORT until stopped."""
    from rtml.shared.embedded_broker import EmbeddedBroker
    from rtml.shared.kafka import ensure_topics
    from rtml.supervisor import until_stopped

    settings = get_settings()

    async def serve() -> None:
        stop = _stop_event()
        with EmbeddedBroker(port=settings.kafka_port) as running:
            on_broker = settings.model_copy(update={"kafka_bootstrap": running.bootstrap})
            created = await until_stopped(stop, ensure_topics(on_broker))
            if created is None:
                return
            click.echo(
                f"embedded broker listening on {running.bootstrap} ({len(created)} topics created)"
            )
            click.echo("it keeps everything in memory: stopping it loses every topic and offset")
            await stop.wait()

    _run(serve())


@main.command()
@click.option(
    "--ready-timeout", default=90.0, show_default=True, help="seconds to wait for /readyz"
)
@click.option(
    "--wiring",
    type=click.Choice(["event", "request"]),
    default="event",
    show_default=True,
    help="request: also run the gateway (POST /v1/predict calling features, router and "
    "prediction over HTTP, port $RTML_GATEWAY_PORT)",
)
def up(ready_timeout: float, wiring: str) -> None:
    """Start the broker (unless external) and every service; Ctrl-C stops all."""
    from rtml.shared.broker_flavor import resolve
    from rtml.shared.kafka import ensure_topics
    from rtml.stack import Wiring, services_for
    from rtml.supervisor import run_stack, until_stopped

    settings = get_settings()
    specs = services_for(cast(Wiring, wiring))

    async def run() -> int:
        stop = _stop_event()
        with _broker_if_embedded(settings) as bootstrap:
            on_broker = settings.model_copy(update={"kafka_bootstrap": bootstrap})
            if await until_stopped(stop, ensure_topics(on_broker)) is None:
                return 0
            # asked once here; the services inherit the answer
            flavor = await resolve(on_broker)
            env = {**os.environ, "RTML_KAFKA_FLAVOR": flavor}
            return await run_stack(specs, env, bootstrap, flavor, stop, ready_timeout)

    sys.exit(_run(run()))


@main.group()
def batch() -> None:
    """Batch jobs: features and predictions computed on an interval."""


@main.group()
def evaluate() -> None:
    """Offline evaluation of policies on logged data and standard benchmarks."""


def _mount_subcommands() -> None:
    from rtml.research.bakeoff_cli import cb_bakeoff
    from rtml.research.experiment_cli import experiment
    from rtml.schemas import schemas_group
    from rtml.services.features.cli import batch_features
    from rtml.services.prediction.cli import models
    from rtml.services.trainer.cli import skew_command, train_command
    from rtml.shared.tasks.cli import tasks_group
    from rtml.tasks.eta.simulator.cli import simulate_command
    from rtml.tasks.recs.cli import batch_predict, evaluate_recs

    main.add_command(simulate_command)
    main.add_command(experiment)
    main.add_command(train_command)
    main.add_command(skew_command)
    main.add_command(models)
    main.add_command(tasks_group)
    main.add_command(schemas_group)
    batch.add_command(batch_features)
    batch.add_command(batch_predict)
    evaluate.add_command(evaluate_recs)
    evaluate.add_command(cb_bakeoff)


@main.command()
@click.option("--duration", type=click.Choice(["short", "default"]), default="default",
              show_default=True,
              help="short: ~1 minute of live traffic (what CI runs); "
                   "default: a few minutes")  # fmt: skip
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="keep the event logs, model store and warehouse here "
                   "[default: a temporary directory]")  # fmt: skip
@click.option("--storage", default=None, metavar="URL",
              help="keep the model store and warehouse under this object storage URL "
                   "instead, e.g. s3://bucket/demo (RTML_S3_ENDPOINT_URL for MinIO)")  # fmt: skip
def demo(duration: str, seed: int, workdir: Path | None, storage: str | None) -> None:
    """The whole stack through a storm: streaming features, bandit routing, drift-triggered
    fine-tuning."""
    from rtml.demo import run_demo

    sys.exit(asyncio.run(run_demo(duration, seed, workdir, click.echo, storage)))


@main.command()
@click.option("--markdown", is_flag=True,
              help="the settings table of docs/OPERATING.md (no current values)")  # fmt: skip
def config(markdown: bool) -> None:
    """Every RTML_* setting: its variable, default, current value (secrets hidden) and
    meaning."""
    from pydantic import ValidationError

    from rtml.settings_catalog import declared, effective, plain_table
    from rtml.settings_catalog import markdown as markdown_table

    if markdown:
        click.echo(markdown_table(declared()), nl=False)
        return
    try:
        rows = effective()
    except ValidationError as exc:
        raise click.ClickException(f"a setting does not parse:\n{exc}") from exc
    click.echo(plain_table(rows))


@main.command()
def topics() -> None:
    """Create every rtml topic that does not exist yet (idempotent)."""
    from rtml.shared.kafka import ensure_topics

    created = asyncio.run(ensure_topics(get_settings()))
    click.echo(f"created: {', '.join(created) or 'nothing, all topics exist'}")


_mount_subcommands()
