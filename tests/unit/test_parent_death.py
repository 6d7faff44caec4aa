"""A child started with ``die_with_this_process()`` dies when its parent is killed -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests.helpers import survivors

# a parent that starts a long sleep, says its pid, and waits to be killed
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from rtml.shared.parent_death import die_with_this_process
    child = subprocess.Popen(["sleep", "300"], preexec_fn={preexec})
    print(child.pid, flush=True)
    time.sleep(300)
    """
)


def orphan_of_a_killed_parent(preexec: str) -> psutil.Process:
    """Run PARENT, kill it with SIGKILL once its child runs; the child."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(preexec=preexec)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    return child


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_its_parent() -> None:
    child = orphan_of_a_killed_parent("die_with_this_process()")
    assert survivors([child], timeout_s=10) == []


def test_without_it_the_child_outlives_its_parent() -> None:
    """The control: what happened to rtml up's children before."""
    child = orphan_of_a_killed_parent("None")
    try:
        assert survivors([child], timeout_s=1) == [child]
    finally:
        child.kill()
