from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest
from rtml.shared.contracts import Message
from rtml.shared.tasks import registry
from rtml.shared.tasks.registry import (
    InvalidTasks,
    UnknownTask,
    load_registry,
    load_spec,
    served_task,
    task_sources,
    task_spec,
)
from rtml.shared.tasks.spec import Entity, Feature, Label, Model, TaskSpec

from rtml.tasks.eta.events import OrderReady

OWN = ["rtml.tasks.eta.spec", "rtml.tasks.recs.spec"]


@pytest.fixture
def reloaded() -> Iterator[None]:
    registry.tasks.cache_clear()
    yield
    registry.tasks.cache_clear()


def test_rtml_tasks_lists_the_modules_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTML_TASKS", " rtml.tasks.recs.spec, ,rtml.tasks.eta.spec ")
    assert task_sources() == ["rtml.tasks.recs.spec", "rtml.tasks.eta.spec"]


def test_without_rtml_tasks_the_entry_points_are_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RTML_TASKS")
    points = [
        EntryPoint("recs", "rtml.tasks.recs.spec", "rtml.tasks"),
        EntryPoint("eta", "rtml.tasks.eta.spec", "rtml.tasks"),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)
    assert task_sources() == OWN


def test_no_task_at_all_says_how_to_register_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTML_TASKS")
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    with pytest.raises(InvalidTasks, match="no task is registered: set RTML_TASKS"):
        load_registry()


def test_tasks_are_looked_up_by_name_and_an_unknown_one_names_the_known() -> None:
    tasks = load_registry(OWN)
    assert tasks.names == ("eta", "recs")
    assert tasks["recs"].label.event.SCHEMA == "item_clicked"
    assert tasks.labelled_by("order_delivered") is tasks["eta"]
    assert tasks.labelled_by("order_placed") is None
    with pytest.raises(UnknownTask, match="unknown task 'fraud'; known tasks: eta, recs"):
        tasks["fraud"]


def test_a_label_event_labels_one_task(monkeypatch: pytest.MonkeyPatch) -> None:
    twin = types.ModuleType("twin_task")
    twin.TASK = dataclasses.replace(load_spec("rtml.tasks.eta.spec"), name="eta_twin")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "twin_task", twin)
    already = "twin_task: TASK.label.event: order_delivered already labels eta"
    with pytest.raises(InvalidTasks, match=already):
        load_registry([*OWN, "twin_task"])


def test_every_problem_of_every_module_is_reported_with_its_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = types.ModuleType("broken_task")
    broken.TASK = "not a spec"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "broken_task", broken)
    with pytest.raises(InvalidTasks) as raised:
        load_registry(["broken_task", "no.such.module", *OWN, "rtml.tasks.eta.spec"])
    assert [(source, problem.where) for source, problem in raised.value.problems] == [
        ("broken_task", "TASK"),
        ("no.such.module", "module"),
        ("rtml.tasks.eta.spec", "name"),
    ]


def test_the_process_registry_is_loaded_once_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, reloaded: None
) -> None:
    monkeypatch.setenv("RTML_TASKS", "rtml.tasks.recs.spec")
    assert task_spec("recs").name == "recs"
    with pytest.raises(UnknownTask, match="known tasks: recs$"):
        task_spec("eta")


def test_an_event_schema_names_one_class_across_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clicked(Message):  # another task's event under recs' schema name
        SCHEMA = "item_clicked"
        KEY_FIELD = "visitor_id"
        visitor_id: str

    clash = types.ModuleType("clash_task")
    clash.TASK = TaskSpec(  # type: ignore[attr-defined]
        name="clash",
        events=(Clicked,),
        entities=(Entity("visitor", key="visitor_id"),),
        features=(Feature("clicks_1h", "count", "visitor", window_s=3600.0, events=(Clicked,)),),
        label=Label(Clicked, join=(("visitor_id", "visitor_id"),), value=float, reward=max),
        model=Model("regression", objective="reg:squarederror"),
    )
    monkeypatch.setitem(sys.modules, "clash_task", clash)
    with pytest.raises(InvalidTasks, match="events.0.: schema 'item_clicked' is already recs's"):
        load_registry(["rtml.tasks.recs.spec", "clash_task"])


def test_tasks_that_share_an_entity_must_declare_its_shared_features_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eta = load_spec("rtml.tasks.eta.spec")
    features = tuple(
        dataclasses.replace(f, window_s=900.0) if f.name == "restaurant_orders_10m" else f
        for f in eta.features
    )
    label = dataclasses.replace(eta.label, event=OrderReady, join=(("order_id", "order_id"),))
    other = types.ModuleType("other_task")
    other.TASK = dataclasses.replace(eta, name="prep", features=features, label=label)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "other_task", other)
    with pytest.raises(InvalidTasks, match="restaurant_orders_10m of restaurant differs"):
        load_registry(["rtml.tasks.eta.spec", "other_task"])


def test_a_one_task_service_serves_the_configured_or_the_only_loaded_task(
    monkeypatch: pytest.MonkeyPatch, reloaded: None
) -> None:
    assert served_task("recs", "RTML_TRAINER_TASK") == "recs"
    with pytest.raises(ValueError, match="RTML_TRAINER_TASK is not set and 2 tasks are loaded"):
        served_task(None, "RTML_TRAINER_TASK")
    monkeypatch.setenv("RTML_TASKS", "rtml.tasks.recs.spec")
    registry.tasks.cache_clear()
    assert served_task(None, "RTML_TRAINER_TASK") == "recs"
