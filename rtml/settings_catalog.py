"""Every ``RTML_*`` setting in one list, read from the pydantic-settings classes that
define them: what ``rtml config`` prints and what docs/OPERATING.md's settings
table is generated from (``rtml config --markdown``; a test keeps the two equal).

A setting's meaning is its field's description. The router's per-task settings
have a name per task (``RTML_ROUTER_POLICY_<TASK>``): the table shows the pattern,
``rtml config`` one row per loaded task with the default its spec gives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from rtml.services.collector.config import CollectorSettings
from rtml.services.dashboard.settings import DashboardSettings
from rtml.services.ingestion.config import IngestionSettings
from rtml.services.router.handlers import TASK_OVERRIDES
from rtml.services.trainer.config import TrainerSettings
from rtml.shared.build import BuildSettings
from rtml.shared.object_storage import StorageSettings
from rtml.shared.registry_mirror import MirrorSettings
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import RegistrySettings, tasks

# in the order of the table; a subclass lists only the fields it adds
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    Settings,
    StorageSettings,
    MirrorSettings,
    RegistrySettings,
    BuildSettings,
    IngestionSettings,
    CollectorSettings,
    TrainerSettings,
    DashboardSettings,
)
UNSET = "(unset)"
EMPTY = "(empty)"
HIDDEN = "********"
SPEC_DEFAULT = "the task's spec"


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str
    meaning: str
    secret: bool = False


@dataclass(frozen=True)
class Effective:
    setting: Setting
    current: str


def shown(value: object) -> str:
    """A value as it is written in the environment; a secret is never shown."""
    if value is None:
        return UNSET
    if isinstance(value, SecretStr):
        return HIDDEN if value.get_secret_value() else EMPTY
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(", ", ": "))
    return str(value) or EMPTY


def _own_fields(cls: type[BaseSettings]) -> dict:
    inherited = set()
    for base in cls.__mro__[1:]:
        inherited |= set(getattr(base, "model_fields", {}))
    return {name: field for name, field in cls.model_fields.items() if name not in inherited}


def _variable(cls: type[BaseSettings], name: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def declared() -> list[Setting]:
    """Every setting once, in table order: the classes' fields, then the per-task patterns."""
    found: dict[str, Setting] = {}
    for cls in SETTINGS_CLASSES:
        for name, field in _own_fields(cls).items():
            variable = _variable(cls, name)
            default = field.get_default(call_default_factory=True)
            setting = Setting(
                variable,
                shown(default),
                field.description or "",
                secret=field.annotation in (SecretStr, SecretStr | None),
            )
            # a setting several services read is declared by each: once here
            found.setdefault(variable, setting)
    for override in TASK_OVERRIDES:
        variable = override.variable("<task>")
        found[variable] = Setting(variable, SPEC_DEFAULT, override.meaning)
    return list(found.values())


def effective(environ: Mapping[str, str] | None = None) -> list[Effective]:
    """Each setting with the value it has here and now (pydantic's reading of the
    environment); the per-task ones for each loaded task. Raises pydantic's
    ValidationError, naming the variable, when one does not parse."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for cls in SETTINGS_CLASSES:
        instance = cls()
        for name in _own_fields(cls):
            values.setdefault(_variable(cls, name), getattr(instance, name))
    rows = [
        Effective(setting, shown(values[setting.variable]))
        for setting in declared()
        if setting.variable in values
    ]
    for spec in tasks().values():
        for override in TASK_OVERRIDES:
            default = override.spec_default(spec)
            if default is None:
                continue
            variable = override.variable(spec.name)
            setting = Setting(variable, shown(default), override.meaning)
            rows.append(Effective(setting, environ.get(variable, setting.default)))
    return rows


def markdown(settings: list[Setting]) -> str:
    """The settings table of docs/OPERATING.md."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in settings:
        cells = (f"`{setting.variable}`", f"`{setting.default}`", setting.meaning)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def plain_table(rows: list[Effective]) -> str:
    """For the terminal or a file: aligned columns, no escape codes."""
    cells = [("variable", "default", "current", "meaning")] + [
        (row.setting.variable, row.setting.default, row.current, row.setting.meaning)
        for row in rows
    ]
    widths = [max(len(cell[i]) for cell in cells) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
        + "  "
        + line[3]
        for line in cells
    )
