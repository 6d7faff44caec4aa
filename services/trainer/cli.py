"""``rtml train``: stage 1 (from scratch) and stage 3 (fine-tune) by hand."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import click
from rtml.services.trainer.config import TrainerSettings
from rtml.services.trainer.jobs import (
    Candidate,
    NotEnoughData,
    champion_if_none,
    discard_consumed,
    fine_tune_candidate,
    register,
    scratch_candidate,
)
from rtml.shared.contracts import Task, Trigger
from rtml.shared.model_store import ModelRecord, ModelStore
from rtml.shared.settings import get_settings
from rtml.shared.tasks.cli import TASK
from rtml.shared.tasks.registry import task_spec
from rtml.shared.warehouse import Warehouse


@click.command("train")
@click.option("--task", type=TASK, default=None,
              help="a loaded task (rtml tasks list)  [default: $RTML_TRAINER_TASK]")  # fmt: skip
@click.option(
    "--from-scratch", "mode", flag_value="scratch", default=True, help="stage 1: a new model"
)
@click.option(
    "--fine-tune",
    "mode",
    flag_value="finetune",
    help="stage 3: warm-start the champion on newer examples",
)
@click.option("--event-log", type=click.Path(exists=True, dir_okay=False), default=None,
              help="train on a stored event log instead of the warehouse (bootstrap)")  # fmt: skip
@click.option("--discard-after-use", is_flag=True, help="delete the examples a fine-tune consumed")
@click.option("--champion/--no-champion", default=True, show_default=True,
              help="make the new version the champion if the task has none")  # fmt: skip
@click.option(
    "--announce/--no-announce", default=True, show_default=True, help="announce on rtml.models"
)
def train_command(
    task: Task | None,
    mode: str,
    event_log: str | None,
    discard_after_use: bool,
    champion: bool,
    announce: bool,
) -> None:
    """Train a model version and register it in the model store."""
    config = TrainerSettings()
    task = task or _default_task(config)
    store, warehouse = ModelStore(config.model_store), Warehouse(config.warehouse)
    try:
        with _spinner(f"training {task} ({mode})"):
            candidate = _candidate(task, mode, event_log, store, warehouse)
    except NotEnoughData as exc:
        raise click.ClickException(str(exc)) from exc
    if not candidate.better_than_parent:
        raise click.ClickException(
            f"the fine-tune is worse than its parent on the holdout: {candidate.judgement}"
        )
    record = register(store, candidate, Trigger(kind="manual"))
    click.echo(
        f"registered {record.version} (parent {record.parent_version}); metrics {record.metrics}"
    )
    promoted = champion and champion_if_none(store, record)
    if promoted:
        click.echo(f"{record.version} is the {task} champion")
    if discard_after_use and candidate.parent_version is not None:
        click.echo(f"discarded {discard_consumed(warehouse, candidate)} consumed examples")
    if announce:
        _announce(record, promoted)


def _candidate(
    task: Task, mode: str, event_log: str | None, store: ModelStore, warehouse: Warehouse
) -> Candidate:
    if mode == "finetune":
        current = store.champion(task) or store.latest(task)
        if current is None:
            raise click.ClickException(
                f"no {task} model to fine-tune; train one --from-scratch first"
            )
        return fine_tune_candidate(warehouse, store, current.version)
    if event_log is None:
        return scratch_candidate(warehouse, task)
    from rtml.services.trainer.bootstrap import NoLabelsInLog, event_log_candidate
    from rtml.shared.eventlog import read_event_log

    source = {"source": "event_log", "path": str(Path(event_log).resolve()),
              "sha256": _sha256(event_log)}  # fmt: skip
    try:
        return event_log_candidate(list(read_event_log(event_log)), task, source)
    except NoLabelsInLog as exc:
        raise click.ClickException(str(exc)) from exc


def _announce(record: ModelRecord, promoted: bool) -> None:
    from rtml.shared.kafka import start_producer
    from rtml.shared.model_announcements import announce

    async def send() -> None:
        producer = await start_producer(get_settings())
        try:
            await announce(producer, record, "registered", "rtml train")
            if promoted:
                await announce(producer, record, "promoted", f"the first {record.task} model")
        finally:
            await producer.stop()

    try:
        asyncio.run(asyncio.wait_for(send(), 30))
    except Exception as exc:
        raise click.ClickException(
            f"{record.version} is registered but was not announced ({exc}); running services "
            "pick it up from the model store on start, or rerun with a broker up"
        ) from exc
    click.echo(f"announced {record.version} on rtml.models")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _spinner:
    """Progress for a step with no natural count: elapsed seconds on one line."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        click.echo(f"{self.label} ...", nl=False)

    def __exit__(self, *exc: object) -> None:
        click.echo(" done" if exc[0] is None else " failed")


@click.command("skew")
@click.option("--task", type=TASK, default=None,
              help="a loaded task (rtml tasks list)  [default: $RTML_TRAINER_TASK]")  # fmt: skip
@click.option("--event-log", type=click.Path(exists=True, dir_okay=False), required=True,
              help="the event log the logged features should follow from")  # fmt: skip
@click.option("--batch-log", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the event log `rtml batch features` ran on, if not --event-log "
                   "(rtml demo serves the batch features of its warm-up)")  # fmt: skip
def skew_command(task: Task | None, event_log: str, batch_log: str | None) -> None:
    """Compare the features logged in the warehouse with their recomputation from
    an event log by the reference implementation; exit 1 on any mismatch."""
    from rtml.services.trainer.bootstrap import reference_vectors
    from rtml.services.trainer.skew import skew_report
    from rtml.shared.eventlog import read_event_log
    from rtml.shared.features.batch import compute_batch_features

    config = TrainerSettings()
    spec = task_spec(task or _default_task(config))
    messages = list(read_event_log(event_log))
    batch = None if batch_log is None else compute_batch_features(read_event_log(batch_log))
    pairs = reference_vectors(messages, spec, batch)
    reference = {request.id: vector for request, vector in pairs}
    report = skew_report(Warehouse(config.warehouse).read(spec.name), reference)
    click.echo(f"compared {report.compared} logged vectors ({report.missing} not in the log)")
    for name, count in report.mismatches.most_common():
        click.echo(f"  {name}: {count} mismatches")
    for request_id, name, logged, expected in report.first:
        click.echo(f"  e.g. {request_id} {name}: logged {logged!r}, recomputed {expected!r}")
    if not report.clean:
        raise SystemExit(1)
    click.echo("no mismatch: the training data are what was served")


def _default_task(config: TrainerSettings) -> str:
    """RTML_TRAINER_TASK or the only loaded task; a usage error naming --task otherwise."""
    try:
        return config.task
    except ValueError as exc:
        raise click.UsageError(f"--task is needed: {exc}") from None
