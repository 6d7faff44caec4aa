"""The ``--task`` option of every command: a loaded task's name, checked when the
command runs (not when the CLI is imported), with the known names when it is not."""

from __future__ import annotations

from typing import Any

import click

from shared.tasks.registry import InvalidTasks, UnknownTask, tasks


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
