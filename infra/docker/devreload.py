"""Development only: run a service and restart it when its code changes.

``python devreload.py -m rtml.services.ingestion`` runs ``python -m rtml.services.ingestion``
as a child process and polls the ``.py`` files under ``$RTML_DEVRELOAD_DIRS``
(default ``/app/rtml``, where the image lays out rtml with its shared/ and
services/ folders inside). When one changes -- Tilt's
``live_update`` has just synced an edit into the running container -- the child
gets SIGTERM (so it drains as in production), then SIGKILL after
``$RTML_DEVRELOAD_GRACE_S`` seconds, and a fresh child starts with the new code.

SIGTERM/SIGINT to this process are passed on to the child, and this process
exits with the child's code. If the child exits by itself (a crash), so does
this process, with the same code: Kubernetes restarts the container and Tilt,
seeing the restart, rebuilds the image. Standard library only, so that the
image needs nothing extra. The dev overlay (infra/k8s/overlays/dev) inserts it
into every service's command; production runs the services directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

DEFAULT_DIRS = "/app/rtml"


def _log(message: str) -> None:
    print(f"devreload: {message}", file=sys.stderr, flush=True)


def snapshot(dirs: list[str]) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every .py file under ``dirs``."""
    state: dict[str, tuple[int, int]] = {}
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d != "__pycache__" and not d.startswith(".")]
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:  # removed while walking
                    continue
                state[path] = (st.st_mtime_ns, st.st_size)
    return state


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _stop(child: subprocess.Popen, grace: float) -> int:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        return child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _log(f"child {child.pid} still running {grace:g}s after SIGTERM: SIGKILL")
        child.kill()
        return child.wait()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    dirs = [d for d in os.environ.get("RTML_DEVRELOAD_DIRS", DEFAULT_DIRS).split(":") if d]
    interval = float(os.environ.get("RTML_DEVRELOAD_INTERVAL_S", "1"))
    grace = float(os.environ.get("RTML_DEVRELOAD_GRACE_S", "20"))
    command = [sys.executable, *argv]
    child: subprocess.Popen | None = None
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    while True:
        before = snapshot(dirs)
        child = subprocess.Popen(command)
        _log(f"started {' '.join(argv)} (pid {child.pid}); watching {':'.join(dirs)}")
        while True:
            try:
                code = child.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                if not stopping:
                    _log(f"child exited with code {code}")
                return code
            if stopping:
                continue  # the child got the signal; wait for it to drain
            changed = _changed(before, snapshot(dirs))
            if changed:
                shown = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
                _log(f"{len(changed)} file(s) changed ({shown}): restarting")
                code = _stop(child, grace)
                if stopping:  # a stop request arrived while we restarted
                    return code
                break  # start a new child with the new code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
