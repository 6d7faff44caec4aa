"""Everything under tests/abuse is marked ``abuse`` (see frames.EXAMPLES for the settings)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/abuse/" in item.nodeid:
            item.add_marker(pytest.mark.abuse)
