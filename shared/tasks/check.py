"""Validation of a task spec: every problem, each with where it is. Pure.

``rtml tasks check`` prints these, and the registry refuses a task that has any,
so a service never starts with a spec it would trip over later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rtml.shared.contracts import DOMAIN_EVENTS, Message
from rtml.shared.features.definitions import (
    BATCH_FEATURES_OF,
    CALENDAR,
    DEFAULTS,
    ENTITY_OF_KEY_FIELD,
    STREAMING_FEATURES_OF,
    WINDOW_OF,
)
from rtml.shared.tasks.spec import (
    ARM,
    FEATURE_KINDS,
    OBJECTIVE_PREFIXES,
    REQUEST_KINDS,
    WINDOWED_KINDS,
    Feature,
    TaskSpec,
)

# task names become settings (RTML_ROUTER_POLICY_<TASK>), warehouse partitions and labels
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
# the holdout metrics the trainer computes (lower is better)
METRICS = ("mae",)


@dataclass(frozen=True)
class Problem:
    """One problem of a spec: ``where`` is the path to the field (``label.join[0]``)."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def check(spec: Any, *, policies: bool = True) -> list[Problem]:
    """Every problem of ``spec``; empty when it is a valid task. ``policies=False``
    leaves out building the router policy from its params and prior (the router
    does that at start, and the bandits bring scipy into every service that loads
    tasks: ~100 MiB and 3 s each)."""
    if not isinstance(spec, TaskSpec):
        return [Problem("TASK", f"is a {type(spec).__name__}, not a TaskSpec")]
    problems: list[Problem] = []
    if not isinstance(spec.name, str) or not NAME_PATTERN.fullmatch(spec.name):
        problems.append(
            Problem("name", f"{spec.name!r} is not 1-32 lower-case letters, digits and _")
        )
    problems += _events(spec)
    problems += _entities(spec)
    problems += _features(spec)
    problems += _label(spec)
    problems += _model(spec)
    problems += _router(spec) if policies else []
    return problems


def _is_event(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Message)


def _fields(kind: type[Message]) -> set[str]:
    return set(kind.model_fields)


def _events(spec: TaskSpec) -> list[Problem]:
    problems: list[Problem] = []
    if not spec.events:
        problems.append(Problem("events", "a task reads at least one event"))
    keys = set(spec.entity_key_names())
    for i, event in enumerate(spec.events):
        where = f"events[{i}]"
        if not _is_event(event):
            problems.append(Problem(where, f"{event!r} is not a contract class (Message)"))
            continue
        if event not in DOMAIN_EVENTS:
            problems.append(Problem(where, f"{event.SCHEMA} is not a domain event of rtml.events"))
        if event.KEY_FIELD not in keys:
            problems.append(
                Problem(
                    where,
                    f"{event.SCHEMA} is keyed by {event.KEY_FIELD!r}, the key of none of the "
                    f"task's entities ({', '.join(sorted(keys)) or 'none declared'})",
                )
            )
    return problems


def _entities(spec: TaskSpec) -> list[Problem]:
    problems: list[Problem] = []
    names: set[str] = set()
    event_fields = set().union(*(_fields(e) for e in spec.events if _is_event(e)))
    for i, entity in enumerate(spec.entities):
        where = f"entities[{i}] ({entity.name})"
        if entity.name in names:
            problems.append(Problem(where, "declared twice"))
        names.add(entity.name)
        if entity.key not in event_fields:
            problems.append(
                Problem(f"{where}.key", f"{entity.key!r} is a field of none of the task's events")
            )
        if entity.name not in STREAMING_FEATURES_OF:
            problems.append(
                Problem(
                    f"{where}.name",
                    f"no feature implementation for entity kind {entity.name!r} (built in: "
                    f"{', '.join(STREAMING_FEATURES_OF)})",
                )
            )
        elif ENTITY_OF_KEY_FIELD.get(entity.key) != entity.name:
            problems.append(
                Problem(
                    f"{where}.key",
                    f"the {entity.name} implementation keys its events by "
                    f"{_key_of(entity.name)!r}, not {entity.key!r}",
                )
            )
    return problems


def _key_of(kind: str) -> str | None:
    return next((key for key, name in ENTITY_OF_KEY_FIELD.items() if name == kind), None)


def _features(spec: TaskSpec) -> list[Problem]:
    problems: list[Problem] = []
    if not spec.features:
        problems.append(Problem("features", "a task has at least one feature"))
    entities = {entity.name for entity in spec.entities}
    seen: set[str] = set()
    for i, feature in enumerate(spec.features):
        where = f"features[{i}] ({feature.name})"
        if feature.name in seen:
            problems.append(Problem(where, "declared twice"))
        seen.add(feature.name)
        if feature.kind not in FEATURE_KINDS:
            problems.append(
                Problem(f"{where}.kind", f"{feature.kind!r} is not one of {FEATURE_KINDS}")
            )
            continue
        if not isinstance(feature.default, int | float) or not math.isfinite(feature.default):
            problems.append(Problem(f"{where}.default", f"{feature.default!r} is not finite"))
        if feature.kind in WINDOWED_KINDS:
            window = feature.window_s
            if not isinstance(window, int | float) or not 0 < window < math.inf:
                problems.append(
                    Problem(f"{where}.window_s", f"a {feature.kind} needs a window > 0 seconds")
                )
        elif feature.window_s is not None:
            problems.append(
                Problem(f"{where}.window_s", f"only {'/'.join(WINDOWED_KINDS)} have a window")
            )
        if feature.kind in REQUEST_KINDS:
            if feature.entity is not None:
                problems.append(
                    Problem(f"{where}.entity", f"an {feature.kind} feature describes no entity")
                )
            if feature.kind == "calendar" and feature.name not in CALENDAR:
                problems.append(Problem(where, f"calendar features are {', '.join(CALENDAR)}"))
            continue
        if feature.entity not in entities:
            problems.append(
                Problem(
                    f"{where}.entity",
                    f"{feature.entity!r} is none of the task's entities "
                    f"({', '.join(sorted(entities)) or 'none declared'})",
                )
            )
            continue
        problems += _implemented(where, feature)
    return problems


def _implemented(where: str, feature: Feature) -> list[Problem]:
    """The hook: an entity feature is one its kind's implementation computes, with the
    same window and cold-start value (see shared/tasks/spec.py)."""
    entity, name = feature.entity, feature.name
    table = BATCH_FEATURES_OF if feature.kind == "batch" else STREAMING_FEATURES_OF
    if name not in table.get(entity, ()):  # type: ignore[call-overload]
        source = "batch job" if feature.kind == "batch" else "streaming state"
        return [Problem(where, f"the {entity} {source} computes no feature {name!r}")]
    problems = []
    # a missing window is reported by the caller
    windowed = feature.kind in WINDOWED_KINDS and feature.window_s is not None
    if windowed and WINDOW_OF.get(name) != feature.window_s:
        problems.append(
            Problem(
                f"{where}.window_s",
                f"{feature.window_s!r}, but the {entity} implementation looks back "
                f"{WINDOW_OF.get(name)!r} s",
            )
        )
    if DEFAULTS.get(name) != feature.default:
        problems.append(
            Problem(
                f"{where}.default",
                f"{feature.default!r}, but the {entity} implementation defaults to "
                f"{DEFAULTS.get(name)!r}",
            )
        )
    return problems


def _label(spec: TaskSpec) -> list[Problem]:
    label, problems = spec.label, []
    if not _is_event(label.event):
        return [Problem("label.event", f"{label.event!r} is not a contract class (Message)")]
    if label.event not in spec.events:
        problems.append(
            Problem("label.event", f"{label.event.SCHEMA} is not one of the task's events")
        )
    if not label.join:
        problems.append(Problem("label.join", "a label joins its prediction on at least one key"))
    request_side = {*spec.entity_key_names(), *spec.request_keys, ARM}
    for i, (prediction_side, label_side) in enumerate(label.join):
        if prediction_side not in request_side:
            problems.append(
                Problem(
                    f"label.join[{i}]",
                    f"{prediction_side!r} is no key of the task's requests "
                    f"({', '.join(sorted(request_side))})",
                )
            )
        if label_side not in _fields(label.event):
            problems.append(
                Problem(f"label.join[{i}]", f"{label.event.SCHEMA} has no field {label_side!r}")
            )
    if label.window_s is not None and not 0 < label.window_s < math.inf:
        problems.append(Problem("label.window_s", f"{label.window_s!r} is not > 0 seconds"))
    if label.when_missing is not None and not math.isfinite(label.when_missing):
        problems.append(Problem("label.when_missing", f"{label.when_missing!r} is not finite"))
    for name in ("value", "reward"):
        if not callable(getattr(label, name)):
            problems.append(Problem(f"label.{name}", "is not callable"))
    return problems


def _model(spec: TaskSpec) -> list[Problem]:
    model, problems = spec.model, []
    prefixes = OBJECTIVE_PREFIXES.get(model.kind)
    if prefixes is None:
        problems.append(
            Problem("model.kind", f"{model.kind!r} is not one of {tuple(OBJECTIVE_PREFIXES)}")
        )
    elif not model.objective.startswith(prefixes):
        problems.append(
            Problem(
                "model.objective",
                f"{model.objective!r} is not a {model.kind} objective ({' or '.join(prefixes)}...)",
            )
        )
    if model.metric not in METRICS:
        problems.append(Problem("model.metric", f"{model.metric!r} is not one of {METRICS}"))
    names = set(spec.feature_names)
    for i, name in enumerate(model.drift_features):
        if name not in names:
            problems.append(
                Problem(f"model.drift_features[{i}]", f"{name!r} is not a feature of the task")
            )
    return problems


def _router(spec: TaskSpec) -> list[Problem]:
    # imported here: only a check of the router policies needs the bandits (scipy)
    from rtml.shared.bandits.contextual import CONTEXTUAL_POLICY_NAMES
    from rtml.shared.bandits.policies import POLICY_NAMES, make_policy

    router, problems = spec.router, []
    if router.policy in CONTEXTUAL_POLICY_NAMES:
        if router.items is None:
            problems.append(
                Problem("router.policy", f"{router.policy} routes items: declare router.items")
            )
    elif router.policy not in POLICY_NAMES:
        known = (*POLICY_NAMES, *CONTEXTUAL_POLICY_NAMES)
        problems.append(Problem("router.policy", f"{router.policy!r} is not one of {known}"))
    else:
        try:
            make_policy(router.policy, **router.params).add_arm("prior-check", **router.prior)
        except Exception as exc:  # the policy's own words say what is wrong
            problems.append(Problem("router.params/prior", f"{type(exc).__name__}: {exc}"))
    items = router.items
    if items is not None:
        if items.count < 1:
            problems.append(Problem("router.items.count", "at least one item"))
        if len(items.categorical) != len(items.categories):
            problems.append(
                Problem(
                    "router.items.categories",
                    f"{len(items.categories)} category counts for "
                    f"{len(items.categorical)} categorical features",
                )
            )
        if any(size < 1 for size in items.categories):
            problems.append(Problem("router.items.categories", "every count must be >= 1"))
        names = set(spec.feature_names)
        for field_name in ("categorical", "numeric"):
            for i, name in enumerate(getattr(items, field_name)):
                if name not in names:
                    problems.append(
                        Problem(
                            f"router.items.{field_name}[{i}]",
                            f"{name!r} is not a feature of the task",
                        )
                    )
    return problems
