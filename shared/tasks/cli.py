"""``rtml tasks list`` and ``rtml tasks check``, and the ``--task`` option of every
command: a loaded task's name, checked when the command runs (not when the CLI is
imported), with the known names when it is not."""

from __future__ import annotations

from typing import Any

import click
from rtml.shared.model_metrics import METRICS
from rtml.shared.tasks.registry import InvalidTasks, UnknownTask, load_registry, tasks
from rtml.shared.tasks.spec import TaskSpec


class TaskName(click.ParamType):
    name = "task"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return tasks()[value].name
        except (UnknownTask, InvalidTasks) as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "TASK"


TASK = TaskName()


@click.group("tasks")
def tasks_group() -> None:
    """The tasks this installation serves (RTML_TASKS, else the rtml.tasks entry points)."""


@tasks_group.command("list")
def list_tasks() -> None:
    """Each loaded task with its features, label, model and router policy."""
    try:
        loaded = tasks()
    except InvalidTasks as exc:
        _print_problems(exc)
        raise SystemExit(1) from None
    for spec in loaded.values():
        click.echo(describe(spec))


@tasks_group.command("check")
@click.argument("modules", nargs=-1, required=True)
def check_tasks(modules: tuple[str, ...]) -> None:
    """Check task modules (each defines TASK = TaskSpec(...)) and print every problem
    with where it is; exit 1 if there is any."""
    try:
        checked = load_registry(list(modules))
    except InvalidTasks as exc:
        _print_problems(exc)
        raise SystemExit(1) from None
    for name in checked:
        click.echo(f"{name}: ok")


def describe(spec: TaskSpec) -> str:
    label, model, router = spec.label, spec.model, spec.router
    join = ", ".join(f"{side} = {label.event.SCHEMA}.{name}" for side, name in label.join)
    window = "the collector's join window" if label.window_s is None else f"{label.window_s:g} s"
    missing = "dropped" if label.when_missing is None else f"label {label.when_missing:g}"
    lines = [
        f"{spec.name} ({spec.feature_set})",
        f"  events:   {', '.join(event.SCHEMA for event in spec.events)}",
        f"  entities: {', '.join(f'{e.name} ({e.key})' for e in spec.entities) or '-'}",
        f"  features: {len(spec.features)}",
    ]
    for feature in spec.features:
        where = feature.entity or "request"
        window_text = "" if feature.window_s is None else f", {feature.window_s:g} s"
        default = f", default {feature.default:g}"
        lines.append(f"    {feature.name}: {feature.kind} of {where}{window_text}{default}")
    lines += [
        f"  label:    {label.event.SCHEMA} on {join}, within {window}; none: {missing}",
        f"  model:    {model.kind}, {model.objective}, kept by {model.metric} "
        f"({'higher' if METRICS[model.metric].higher_is_better else 'lower'} is better); "
        f"drift watches {', '.join(model.drift_features) or 'the error only'}",
        f"  router:   {router.policy}"
        + ("" if router.items is None else f" (or over {router.items.count} items)"),
    ]
    return "\n".join(lines)


def _print_problems(error: InvalidTasks) -> None:
    for source, problem in error.problems:
        click.echo(f"{source}: TASK.{problem}", err=True)
    click.echo(f"{len(error.problems)} problem(s)", err=True)
