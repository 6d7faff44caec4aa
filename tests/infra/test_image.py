"""The Dockerfile, .dockerignore and the scripts the image carries, checked
without a Docker engine (none runs here): structure, pinning, user, cache
layering, build context; the scripts are run for real."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.infra import dockerfile, k8s

ROOT = k8s.ROOT
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def parsed():
    return dockerfile.parse(DOCKERFILE)


def test_multi_stage_on_a_pinned_slim_base(parsed):
    args, stages = parsed
    assert len(stages) >= 2, "build in one stage, run from a clean one"
    for stage in stages:
        base = stage.base
        assert "$" not in base, f"unresolved base image {base}"
        pinned = "@sha256:" in base or re.search(r":\d+\.\d+\.\d+[\w.-]*$", base)
        assert pinned, f"{base}: pin the base by digest or by a full version tag"
        assert "slim" in base, f"{base}: use a slim base"
    assert stages[0].name and stages[-1].name != stages[0].name


def test_runs_as_a_non_root_user(parsed):
    _, stages = parsed
    user = stages[-1].last("USER")
    assert user, "the final stage must set USER"
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric, non-root uid (runAsNonRoot)"
    manifests = "\n".join(p.read_text() for p in (ROOT / "infra/k8s/base").glob("*.yaml"))
    assert f"runAsUser: {uid}" in manifests, "the manifests run the pods as the image's user"


def test_dependencies_get_a_layer_of_their_own(parsed):
    _, stages = parsed
    builder = stages[0]
    keys = [(i.keyword, i.args) for i in builder.instructions]
    first_code = next(
        n for n, (k, a) in enumerate(keys) if k == "COPY" and re.search(r"\bservices\b", a)
    )
    deps = next(
        n
        for n, (k, a) in enumerate(keys)
        if k == "RUN" and "requirements" in a and "pip install" in a
    )
    install = next(
        n for n, (k, a) in enumerate(keys) if k == "RUN" and "pip install --no-deps ." in a
    )
    assert deps < first_code < install, "install dependencies before the code is copied, then rtml"
    before = [a for k, a in keys[:deps] if k == "COPY"]
    for copied in before:  # only what changes with dependencies may precede that layer
        assert "pyproject.toml" in copied or "requirements.py" in copied, copied
    final = stages[-1]
    assert any(flags.get("from") == builder.name for flags, _, _ in final.copies()), (
        "the runtime stage takes the installed environment from the builder"
    )
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in final.instructions)


def test_every_copied_path_exists_and_is_in_the_build_context(parsed):
    _, stages = parsed
    for stage in stages:
        for flags, sources, _ in stage.copies():
            if "from" in flags:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert not dockerfile.dockerignore_excludes(DOCKERIGNORE, source), (
                    f"COPY {source}, but .dockerignore leaves it out of the context"
                )
    for path in (".git", "tests", "benchmarks", ".rtml", "services/__pycache__", ".venv"):
        assert dockerfile.dockerignore_excludes(DOCKERIGNORE, path), f"{path} reaches the context"


def test_default_command_runs_a_service(parsed):
    _, stages = parsed
    cmd = stages[-1].last("CMD")
    assert cmd
    module = re.search(r'"-m",\s*"([\w.]+)"', cmd.args).group(1)
    assert k8s.module_exists(module), module


def test_requirements_script_reads_pyproject_and_swaps_xgboost():
    script = ROOT / "infra/docker/requirements.py"
    out = subprocess.run(
        [sys.executable, str(script), str(ROOT / "pyproject.toml"), "--xgboost", "xgboost-cpu"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(out) == len(deps)
    for line, dep in zip(out, deps, strict=True):
        if re.match(r"xgboost\b(?!-)", dep):
            assert line == "xgboost-cpu" + dep[len("xgboost") :], line
        else:
            assert line == dep
    assert any(line.startswith("xgboost-cpu") for line in out)


def test_requirements_script_adds_the_extras_the_image_asks_for():
    script = ROOT / "infra/docker/requirements.py"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = subprocess.run(
        [sys.executable, str(script), str(ROOT / "pyproject.toml"), "--extras", "mlflow"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.splitlines()  # fmt: skip
    assert out == pyproject["dependencies"] + pyproject["optional-dependencies"]["mlflow"]
    refused = subprocess.run(
        [sys.executable, str(script), str(ROOT / "pyproject.toml"), "--extras", "nope"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0 and "nope" in refused.stderr


# ------------------------------------------------------------------ devreload --

SERVICE = """
import os, signal, sys, time
from svc import version
signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(os.environ.get("EXIT_ON_TERM", "0"))))
with open(os.environ["OUT"], "a") as f:
    f.write(f"{os.getpid()} {version.VERSION}\\n")
if os.environ.get("CRASH"):
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    pkg = tmp_path / "app" / "svc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(SERVICE)
    (pkg / "version.py").write_text("VERSION = 1\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infra/docker/devreload.py"), "-m", "svc"],
        cwd=tmp_path / "app",
        env={
            **os.environ,
            "OUT": str(out),
            "RTML_DEVRELOAD_DIRS": str(tmp_path / "app"),
            "RTML_DEVRELOAD_INTERVAL_S": "0.1",
            "RTML_DEVRELOAD_GRACE_S": "5",
            **env,
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out


def test_devreload_restarts_the_service_when_code_changes_and_forwards_sigterm(tmp_path):
    proc, out = _start(tmp_path, EXIT_ON_TERM="0")
    try:
        _wait_for(lambda: len(_lines(out)) == 1)
        (tmp_path / "app/svc/version.py").write_text("VERSION = 22\n")
        _wait_for(lambda: len(_lines(out)) == 2)
        (first_pid, v1), (second_pid, v2) = _lines(out)
        assert (v1, v2) == ("1", "22") and first_pid != second_pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert len(_lines(out)) == 2, "a stop must not start another child"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert "restarting" in proc.stderr.read()


def test_devreload_exits_with_the_code_of_a_crashed_service(tmp_path):
    proc, out = _start(tmp_path, CRASH="1")
    try:
        assert proc.wait(timeout=10) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert len(_lines(out)) == 1
