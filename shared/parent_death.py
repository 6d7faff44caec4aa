"""Children that never outlive the process that started them, however it ends.

A supervisor stops its children itself on SIGTERM or SIGINT, but a ``kill -9`` (or an
OOM kill) of the supervisor leaves them running with nobody to stop them. On Linux a
child can ask the kernel for a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
set between fork and exec through ``preexec_fn``. No maintained library does just this
(python-prctl's last release is from 2020 and builds against libcap; pyprctl's is from
2021), so the one call goes through ctypes.

The signal is SIGKILL: with the parent gone nobody could escalate a SIGTERM that a
child ignores or is slow to act on, and every rtml service is built to survive a
kill -9 (docs/RELIABILITY.md). The kernel sends it when the *thread* that started the
child exits: start children from a thread that lives as long as the process (the
main thread, where ``rtml up`` runs its event loop).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` or ``asyncio.create_subprocess_exec``
    that makes the child get SIGKILL when this process dies; None where the kernel
    offers no such signal (not Linux), where only an orderly stop stops the children."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def set_parent_death_signal() -> None:
        if prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # the parent may have died between the fork and the prctl: then nobody will
        # signal this child, so it does not start at all
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal
