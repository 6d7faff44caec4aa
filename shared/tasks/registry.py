"""Which tasks this process serves: loaded once, checked, looked up by name.

A task is a module that defines ``TASK = TaskSpec(...)``. The modules come from
``RTML_TASKS`` (comma-separated module paths) when it is set, otherwise from the
installed packages' entry points of the group ``rtml.tasks`` (rtml's own
pyproject declares eta and recs there; a user's package declares theirs the same
way). A task with any problem (``check.py``) stops the process at load with
every problem listed, rather than failing on the first message that needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from functools import cached_property, lru_cache
from importlib.metadata import entry_points

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rtml.shared.contracts import REGISTRY, Message
from rtml.shared.features.catalog import CatalogError, EntityFeatures, entity_catalog
from rtml.shared.tasks.check import Problem, check
from rtml.shared.tasks.spec import TaskSpec

TASKS_ENV = "RTML_TASKS"
ENTRY_POINT_GROUP = "rtml.tasks"
# the attribute of a task module that holds its spec
SPEC_ATTRIBUTE = "TASK"


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    tasks: str = Field(
        default="",
        description="the task modules to serve, comma-separated (empty: the rtml.tasks entry "
        "points of the installed packages)",
    )


class UnknownTask(ValueError):
    """A task name no loaded task has. A ValueError, so that a contract field holding
    it fails validation like any other bad value (HTTP 400, rtml.dlq)."""

    def __init__(self, name: object, known: tuple[str, ...]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown task {name!r}; known tasks: {', '.join(known) or 'none'}")


class InvalidTasks(Exception):
    """Task modules that cannot be served: each problem with the module it is in."""

    def __init__(self, problems: list[tuple[str, Problem]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{source}: TASK.{problem}" for source, problem in problems))


class TaskRegistry(Mapping[str, TaskSpec]):
    """The loaded tasks by name, in load order."""

    def __init__(self, specs: Mapping[str, TaskSpec]) -> None:
        self._specs = dict(specs)

    def __getitem__(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise UnknownTask(name, self.names) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @cached_property
    def events(self) -> tuple[type[Message], ...]:
        """Every domain event of the loaded tasks: what ``rtml.events`` may carry."""
        return tuple(dict.fromkeys(e for spec in self._specs.values() for e in spec.events))

    @cached_property
    def event_schemas(self) -> dict[str, type[Message]]:
        return {event.SCHEMA: event for event in self.events}

    @cached_property
    def entities(self) -> dict[str, EntityFeatures]:
        """Every entity of the loaded tasks with the union of their features of it."""
        return entity_catalog(self._specs.values())

    def labelled_by(self, schema: str) -> TaskSpec | None:
        """The task whose label is the event ``schema``, if any."""
        return next((s for s in self._specs.values() if s.label.event.SCHEMA == schema), None)


def task_sources() -> list[str]:
    """The task modules to load: ``RTML_TASKS``, else the ``rtml.tasks`` entry points."""
    configured = RegistrySettings().tasks
    if configured.strip():
        return [source.strip() for source in configured.split(",") if source.strip()]
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name)
    return [point.value for point in found]


def load_spec(source: str, *, policies: bool = True) -> TaskSpec:
    """The spec a module declares; InvalidTasks naming the module if it has problems
    (``policies``: see ``check``)."""
    module_path, _, attribute = source.partition(":")
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise InvalidTasks([(source, Problem("module", f"cannot be imported: {exc}"))]) from exc
    spec = getattr(module, attribute or SPEC_ATTRIBUTE, None)
    problems = check(spec, policies=policies)
    if problems:
        raise InvalidTasks([(source, problem) for problem in problems])
    return spec  # type: ignore[no-any-return]


def load_registry(sources: list[str] | None = None, *, policies: bool = True) -> TaskRegistry:
    """Load and check every task of ``sources`` (default: ``task_sources()``), reporting
    the problems of all of them at once."""
    sources = task_sources() if sources is None else sources
    if not sources:
        raise InvalidTasks(
            [(TASKS_ENV, Problem("tasks", "no task is registered: set RTML_TASKS=<module>,... "
                                 "or install a package with rtml.tasks entry points "
                                 "(`pip install -e .` registers eta and recs)"))]
        )  # fmt: skip
    specs: dict[str, TaskSpec] = {}
    problems: list[tuple[str, Problem]] = []
    label_events: dict[str, str] = {}
    for source in sources:
        try:
            spec = load_spec(source, policies=policies)
        except InvalidTasks as exc:
            problems += exc.problems
            continue
        if spec.name in specs:
            problems.append((source, Problem("name", f"task {spec.name!r} is loaded twice")))
        # the collector finds a label's task by its event (a join key per label)
        other = label_events.setdefault(spec.label.event.SCHEMA, spec.name)
        if other != spec.name:
            already = f"{spec.label.event.SCHEMA} already labels {other}"
            problems.append((source, Problem("label.event", already)))
        specs[spec.name] = spec
    problems += _schema_conflicts(specs)
    if not problems:
        try:  # two tasks that share an entity must agree on it
            entity_catalog(specs.values())
        except CatalogError as exc:
            problems.append((",".join(sources), Problem("entities", str(exc))))
    if problems:
        raise InvalidTasks(problems)
    return TaskRegistry(specs)


def _schema_conflicts(specs: Mapping[str, TaskSpec]) -> list[tuple[str, Problem]]:
    """Event schema names are one namespace on rtml.events: a name means one class."""
    owner: dict[str, tuple[type[Message], str]] = {
        schema: (kind, "rtml") for schema, kind in REGISTRY.items()
    }
    problems = []
    for spec in specs.values():
        for i, event in enumerate(spec.events):
            kind, task = owner.setdefault(event.SCHEMA, (event, spec.name))
            if kind is not event:
                problems.append(
                    (
                        spec.name,
                        Problem(f"events[{i}]", f"schema {event.SCHEMA!r} is already {task}'s"),
                    )
                )
    return problems


@lru_cache(maxsize=1)
def tasks() -> TaskRegistry:
    """This process's tasks, loaded on first use (``tasks.cache_clear()`` reloads);
    ``rtml tasks check`` checks the router policies too."""
    return load_registry(policies=False)


def served_task(configured: str | None, variable: str) -> str:
    """The task of a process that serves one: ``configured`` (the setting ``variable``),
    else the only loaded task; with several loaded and none configured, a ValueError
    that names the setting and the choices."""
    if configured is not None:
        return configured
    names = tasks().names
    if len(names) == 1:
        return names[0]
    raise ValueError(
        f"{variable} is not set and {len(names)} tasks are loaded: set it to one of "
        f"{', '.join(names)}"
    )


def task_spec(name: str) -> TaskSpec:
    """The spec of a loaded task; UnknownTask names the known ones."""
    return tasks()[name]
