"""``rtml batch features``: recompute batch features from the events (an event log, or
``rtml.events`` itself) and publish them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from aiokafka.errors import KafkaError
from rtml.services.features.publish import publish
from rtml.shared.contracts import Message
from rtml.shared.errors import RtmlError
from rtml.shared.eventlog import read_event_log
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.kafka import read_messages
from rtml.shared.settings import get_settings
from rtml.shared.tasks.registry import tasks
from rtml.shared.topics import EVENTS

PROGRESS_EVERY = 50_000


@click.command("features")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--dry-run", is_flag=True, help="compute and print, publish nothing")
def batch_features(log: Path | None, dry_run: bool) -> None:
    """The loaded tasks' batch features from the event log LOG (without it: every
    event on rtml.events), and their static records (an item table), published to
    rtml.features.batch; re-running sends only what changed."""

    def progress(count: int) -> None:
        if count % PROGRESS_EVERY == 0:
            click.echo(f"read {count} messages", err=True)

    try:
        events = read_event_log(log) if log else asyncio.run(_events_on_topic())
        records = compute_batch_features(events, on_message=progress)
    except (RtmlError, KafkaError) as exc:
        raise click.ClickException(str(exc)) from exc
    for spec in tasks().values():
        if spec.static_records is not None:
            try:
                records += spec.static_records()
            except ModuleNotFoundError as exc:  # a task's optional data package
                click.echo(f"task {spec.name}: no static records ({exc})", err=True)
    click.echo(f"computed the batch features of {len(records)} entities from {log or EVENTS.name}")
    if dry_run:
        for record in records:
            values = ", ".join(
                f"{n}={v:.3f}" for n, v in zip(record.names, record.values, strict=True)
            )
            click.echo(
                f"{record.entity}: {values} (as of ts={record.ts}, {record.n_events} events)"
            )
        return
    try:
        published = asyncio.run(publish(get_settings(), records))
    except (RtmlError, KafkaError) as exc:
        raise click.ClickException(f"publishing failed: {exc}") from exc
    click.echo(f"published {published.sent} records ({published.unchanged} unchanged)")


async def _events_on_topic() -> list[Message]:
    """Every event on rtml.events, as of now (a record that does not decode is skipped)."""
    return await read_messages(get_settings(), EVENTS.name)
