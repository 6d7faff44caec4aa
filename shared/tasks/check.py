"""Validation of a task spec: every problem, each with where it is. Pure.

``rtml tasks check`` prints these, and the registry refuses a task that has any,
so a service never starts with a spec it would trip over later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rtml.shared.contracts import REGISTRY, Message
from rtml.shared.features.definitions import CALENDAR
from rtml.shared.model_metrics import METRICS, metrics_for
from rtml.shared.tasks.spec import (
    ARM,
    BATCH_AGGREGATES,
    FEATURE_KINDS,
    OBJECTIVE_PREFIXES,
    REQUEST_KINDS,
    WINDOWED_KINDS,
    BatchJob,
    CustomFeatures,
    Feature,
    TaskSpec,
)

# task names become settings (RTML_ROUTER_POLICY_<TASK>), warehouse partitions and labels
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
# a binary model's prediction is the probability of the positive class: the objective
# that predicts one (binary:logitraw predicts a margin, binary:hinge a class)
BINARY_OBJECTIVE = "binary:logistic"


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
    if spec.serving is not None and not callable(spec.serving):
        problems.append(Problem("serving", "is not callable (a factory of a ServingHook)"))
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
        if event.SCHEMA in REGISTRY:
            problems.append(Problem(where, f"{event.SCHEMA} is one of rtml's own messages"))
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
    keys: set[str] = set()
    event_fields = set().union(*(_fields(e) for e in spec.events if _is_event(e)))
    for i, entity in enumerate(spec.entities):
        where = f"entities[{i}] ({entity.name})"
        if entity.name in names:
            problems.append(Problem(where, "declared twice"))
        if entity.key in keys:
            problems.append(Problem(f"{where}.key", f"{entity.key!r} keys another entity"))
        names.add(entity.name)
        keys.add(entity.key)
        if entity.key not in event_fields:
            problems.append(
                Problem(f"{where}.key", f"{entity.key!r} is a field of none of the task's events")
            )
    return problems


def _features(spec: TaskSpec) -> list[Problem]:
    problems: list[Problem] = []
    if not spec.features:
        problems.append(Problem("features", "a task has at least one feature"))
    keys = {entity.name: entity.key for entity in spec.entities}
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
        if feature.entity not in keys:
            problems.append(
                Problem(
                    f"{where}.entity",
                    f"{feature.entity!r} is none of the task's entities "
                    f"({', '.join(sorted(keys)) or 'none declared'})",
                )
            )
            continue
        problems += _computation(where, feature, keys[feature.entity], spec)
    return problems


def _computation(where: str, feature: Feature, key: str, spec: TaskSpec) -> list[Problem]:
    """What an entity feature is computed from: the fields its kind needs, and events
    of the task that reach its entity."""
    kind, problems = feature.kind, []
    if kind == "custom":
        custom = feature.custom
        if not isinstance(custom, CustomFeatures):
            return [Problem(f"{where}.custom", "a custom feature names its CustomFeatures")]
        if feature.name not in custom.names:
            problems.append(Problem(where, f"not one of its CustomFeatures' names {custom.names}"))
        for name in ("state", "reference"):
            if not callable(getattr(custom, name)):
                problems.append(Problem(f"{where}.custom.{name}", "is not callable"))
        if not 0 <= custom.lookback_s < math.inf:
            problems.append(Problem(f"{where}.custom.lookback_s", "is not >= 0 seconds"))
        return problems + _keyed(f"{where}.custom.events", custom.events, key, spec)
    if kind == "batch":
        if isinstance(feature.custom, BatchJob):
            if not callable(feature.custom.compute):
                problems.append(Problem(f"{where}.custom.compute", "is not callable"))
            return problems
        if feature.aggregate not in BATCH_AGGREGATES:
            problems.append(
                Problem(
                    f"{where}.aggregate",
                    f"{feature.aggregate!r} is not one of {BATCH_AGGREGATES} "
                    "(or custom=BatchJob(...))",
                )
            )
        problems += _events_with(f"{where}.events", feature.events, key, spec)
        if feature.aggregate != "count" and not callable(feature.value):
            problems.append(Problem(f"{where}.value", f"a {feature.aggregate} needs a value"))
        return problems
    problems += _keyed(f"{where}.events", feature.events, key, spec)
    if kind in ("mean", "latest") and not callable(feature.value):
        problems.append(Problem(f"{where}.value", f"a {kind} needs a value(event) function"))
    if kind == "latest" and (not isinstance(feature.rank, int) or feature.rank < 1):
        problems.append(Problem(f"{where}.rank", f"{feature.rank!r} is not a rank >= 1"))
    if kind == "span":
        problems += _keyed(f"{where}.closes", feature.closes, key, spec)
        problems += [
            Problem(f"{where}.span_key", f"{event.SCHEMA} has no field {feature.span_key!r}")
            for event in (*feature.events, *feature.closes)
            if _is_event(event) and feature.span_key not in _fields(event)
        ]
        if not 0 < feature.max_open_s < math.inf:
            problems.append(Problem(f"{where}.max_open_s", "is not > 0 seconds"))
    return problems


def _events_with(
    where: str, events: tuple[Any, ...], field_name: str, spec: TaskSpec
) -> list[Problem]:
    """``events`` is not empty, and each is an event of the task with ``field_name``."""
    if not events:
        return [Problem(where, "names no event")]
    problems = []
    for i, event in enumerate(events):
        if not _is_event(event) or event not in spec.events:
            problems.append(Problem(f"{where}[{i}]", f"{event!r} is not one of the task's events"))
        elif field_name not in _fields(event):
            problems.append(Problem(f"{where}[{i}]", f"{event.SCHEMA} has no field {field_name!r}"))
    return problems


def _keyed(where: str, events: tuple[Any, ...], key: str, spec: TaskSpec) -> list[Problem]:
    """``_events_with``, and each event is keyed on rtml.events by the entity's key: the
    streaming state of an entity sees only the events of its partition."""
    problems = _events_with(where, events, key, spec)
    if problems:
        return problems
    return [
        Problem(
            f"{where}[{i}]",
            f"{event.SCHEMA} is keyed by {event.KEY_FIELD!r}, not the entity's {key!r}: "
            "the entity's state never sees it",
        )
        for i, event in enumerate(events)
        if event.KEY_FIELD != key
    ]


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
    elif model.kind == "binary" and model.objective != BINARY_OBJECTIVE:
        problems.append(
            Problem(
                "model.objective",
                f"{model.objective!r} does not predict a probability; a binary model "
                f"is fitted with {BINARY_OBJECTIVE}",
            )
        )
    problems += _metric(model.kind, model.metric)
    names = set(spec.feature_names)
    for i, name in enumerate(model.drift_features):
        if name not in names:
            problems.append(
                Problem(f"model.drift_features[{i}]", f"{name!r} is not a feature of the task")
            )
    return problems


def _metric(kind: str, metric: str) -> list[Problem]:
    if metric not in METRICS:
        return [Problem("model.metric", f"{metric!r} is not one of {tuple(METRICS)}")]
    if kind not in METRICS[metric].kinds and kind in OBJECTIVE_PREFIXES:
        fitting = metrics_for(kind)
        known = (
            f"one of {fitting}"
            if fitting
            else "none yet: the trainer fits regression and binary models"
        )
        return [Problem("model.metric", f"{metric!r} does not judge a {kind} model ({known})")]
    return []


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
