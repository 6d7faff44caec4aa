"""``rtml batch features``: recompute batch features from an event log and publish them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from aiokafka.errors import KafkaError
from rtml.services.features.publish import publish
from rtml.shared.errors import RtmlError
from rtml.shared.eventlog import read_event_log
from rtml.shared.features.batch import compute_batch_features, item_embedding_records
from rtml.shared.settings import get_settings

from rtml.tasks.recs.obd import item_context_rows

PROGRESS_EVERY = 50_000


@click.command("features")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="compute and print, publish nothing")
def batch_features(log: Path, dry_run: bool) -> None:
    """Batch features (historical prep and travel times) from the event log LOG, and
    the item embeddings of the Open Bandit Dataset, published to rtml.features.batch;
    re-running sends only what changed."""

    def progress(count: int) -> None:
        if count % PROGRESS_EVERY == 0:
            click.echo(f"read {count} messages", err=True)

    try:
        records = compute_batch_features(read_event_log(log), on_message=progress)
    except RtmlError as exc:
        raise click.ClickException(str(exc)) from exc
    records += item_embedding_records(item_context_rows("all"))
    click.echo(f"computed the batch features of {len(records)} entities from {log}")
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
