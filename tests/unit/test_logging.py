"""The request id in the JSON log lines: bound for a block, gone after it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from rtml.shared.logging import bound_request, configure_logging, debug_enabled, get_logger


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


def lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_lines_inside_carry_the_request_id_and_lines_after_do_not(capsys: pytest.CaptureFixture):
    configure_logging("test", "DEBUG")
    log = get_logger("test")

    with bound_request("r-1"):
        log.info("inside")
        with bound_request(None):  # nothing to bind: the outer id stays
            log.debug("nested")
    log.info("after")

    inside, nested, after = lines(capsys.readouterr().err)
    assert inside["request_id"] == "r-1" and nested["request_id"] == "r-1"
    assert "request_id" not in after and after["service"] == "test"
    assert debug_enabled()


def test_debug_lines_are_dropped_above_debug(capsys: pytest.CaptureFixture):
    configure_logging("test", "INFO")

    get_logger("test").debug("hidden")

    assert lines(capsys.readouterr().err) == [] and not debug_enabled()
