"""``rtml models ...``: look into the model store and promote a version."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TypeVar

import click
from aiokafka.errors import KafkaError
from rtml.shared import topics
from rtml.shared.contracts import Task
from rtml.shared.errors import ModelStoreError, RtmlError
from rtml.shared.kafka import ensure_topics, start_producer
from rtml.shared.model_announcements import announce
from rtml.shared.model_lineage import render_lineage_tree
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.registry_mirror import MirrorSettings, MlflowRegistry, mirror_store, shown_uri
from rtml.shared.settings import get_settings
from rtml.shared.tasks.cli import TASK
from rtml.shared.tasks.registry import tasks

T = TypeVar("T")


@click.group("models")
@click.option(
    "--store",
    "store_root",
    default=None,
    metavar="DIR|URL",
    help="model store, a directory or s3://bucket/prefix "
    "[default: $RTML_MODEL_STORE or ./.rtml/models]",
)
@click.pass_context
def models(context: click.Context, store_root: str | None) -> None:
    """The model store: versions, lineage, champions."""
    context.obj = ModelStore(store_root or get_settings().model_store)


@models.command("list")
@click.option("--task", type=TASK, default=None, help="only this task's versions")
@click.pass_obj
def list_versions(store: ModelStore, task: Task | None) -> None:
    """Registered versions, oldest first; * marks a champion."""
    records = _or_fail(lambda: store.list(task))
    if not records:
        click.echo(f"no model versions in {store}")
        return
    champions = _or_fail(lambda: {t: store.champion(t) for t in tasks()})
    champion_versions = {r.version for r in champions.values() if r is not None}
    rows = [("", "VERSION", "TASK", "PARENT", "FEATURES", "CREATED", "METRICS")]
    for record in records:
        rows.append(
            (
                "*" if record.version in champion_versions else "",
                record.version,
                record.task,
                record.parent_version or "-",
                record.feature_set,
                f"{record.created_at:%Y-%m-%d %H:%M:%S}",
                _metrics(record),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@models.command("show")
@click.argument("version")
@click.pass_obj
def show(store: ModelStore, version: str) -> None:
    """VERSION's full record as JSON, and whether it is its task's champion."""
    record = _or_fail(lambda: store.record(version))
    champion = _or_fail(lambda: store.champion(record.task))
    body = record.model_dump(mode="json") | {
        "champion": champion is not None and champion.version == version
    }
    click.echo(json.dumps(body, indent=2))


@models.command("lineage")
@click.argument("version")
@click.pass_obj
def lineage(store: ModelStore, version: str) -> None:
    """VERSION's ancestry from the model trained from scratch, and what was built on it."""
    click.echo(_or_fail(lambda: render_lineage_tree(store, version)))


@models.command("promote")
@click.argument("version")
@click.option("--reason", default="promoted by hand", show_default=True)
@click.pass_obj
def promote(store: ModelStore, version: str, reason: str) -> None:
    """Make VERSION its task's champion and announce it on rtml.models."""
    # a champion that cannot load would leave every restarted replica without one
    _, record = _or_fail(lambda: store.load(version))
    _or_fail(lambda: store.set_champion(record.task, version))
    try:
        asyncio.run(_announce_promotion(record, reason))
    except (RtmlError, KafkaError, OSError) as exc:
        raise click.ClickException(
            f"{version} is the {record.task} champion in {store}, but announcing it failed "
            f"({exc}); services pick it up on restart, or run this again to announce it"
        ) from exc
    click.echo(f"{version} is now the {record.task} champion (announced on {topics.MODELS.name})")


@models.command("mirror")
@click.pass_obj
def mirror(store: ModelStore) -> None:
    """Copy every version and champion that MLflow's registry lacks (RTML_MLFLOW_TRACKING_URI)."""
    settings = MirrorSettings()
    if not settings.mlflow_tracking_uri:
        raise click.ClickException("RTML_MLFLOW_TRACKING_URI names no MLflow tracking server")
    try:
        versions, champions = mirror_store(store, MlflowRegistry(settings))
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # whatever MLflow raised, after the retries
        where = shown_uri(settings.mlflow_tracking_uri)
        raise click.ClickException(f"MLflow at {where}: {exc}") from exc
    click.echo(
        f"{versions} versions and {champions} champions of {store} are in MLflow at "
        f"{shown_uri(settings.mlflow_tracking_uri)}"
    )


async def _announce_promotion(record: ModelRecord, reason: str) -> None:
    settings = get_settings()
    await ensure_topics(settings, [topics.MODELS])
    producer = await start_producer(settings)
    try:
        await announce(producer, record, "promoted", reason)
    finally:
        await producer.stop()


def _metrics(record: ModelRecord) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in sorted(record.metrics.items()))


def _or_fail(action: Callable[[], T]) -> T:
    try:
        return action()
    except ModelStoreError as exc:
        raise click.ClickException(str(exc)) from exc
