from __future__ import annotations

import dataclasses
import sys
import types

import pytest
from click.testing import CliRunner
from rtml.shared.tasks import registry
from rtml.shared.tasks.spec import Feature

from rtml.cli import main

OWN = "rtml.tasks.eta.spec,rtml.tasks.recs.spec"


@pytest.fixture(autouse=True)
def reloaded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RTML_TASKS", OWN)
    registry.tasks.cache_clear()
    yield
    registry.tasks.cache_clear()


def test_list_shows_each_task_with_features_label_model_and_router() -> None:
    result = CliRunner().invoke(main, ["tasks", "list"])
    assert result.exit_code == 0, result.output
    assert "eta (eta@1)" in result.output and "recs (recs@1)" in result.output
    assert "restaurant_orders_10m: count of restaurant, 600 s, default 0" in result.output
    assert "label:    item_clicked on session_id = item_clicked.session_id, arm = " in result.output
    assert "within 1800 s; none: label 0" in result.output
    assert "model:    regression, reg:absoluteerror, kept by mae" in result.output
    assert "router:   thompson_beta (or over 80 items)" in result.output


def test_list_with_a_broken_task_prints_its_problems_and_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RTML_TASKS", "no.such.task")
    result = CliRunner().invoke(main, ["tasks", "list"])
    assert result.exit_code == 1
    assert "no.such.task: TASK.module: cannot be imported" in result.output


def test_check_passes_a_valid_module() -> None:
    result = CliRunner().invoke(main, ["tasks", "check", "rtml.tasks.recs.spec"])
    assert (result.exit_code, result.output) == (0, "recs: ok\n")


def test_check_prints_every_problem_with_where_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtml.tasks.eta.spec import TASK as ETA

    module = types.ModuleType("my_task")
    module.TASK = dataclasses.replace(  # type: ignore[attr-defined]
        ETA,
        name="my task",
        features=(*ETA.features, Feature("orders_1h", "count", entity="courier")),
    )
    monkeypatch.setitem(sys.modules, "my_task", module)
    result = CliRunner().invoke(main, ["tasks", "check", "my_task"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "my_task: TASK.name: 'my task' is not 1-32 lower-case letters, digits and _",
        "my_task: TASK.features[13] (orders_1h).window_s: a count needs a window > 0 seconds",
        "my_task: TASK.features[13] (orders_1h).entity: 'courier' is none of the task's "
        "entities (restaurant, zone)",
        "3 problem(s)",
    ]


def test_a_task_option_names_the_known_tasks() -> None:
    result = CliRunner().invoke(main, ["models", "list", "--task", "fraud"])
    assert result.exit_code == 2
    assert "unknown task 'fraud'; known tasks: eta, recs" in result.output
