"""`rtml up` on a terminal: each service's output lines behind its name."""

from __future__ import annotations

import io

from rtml.stack import ServiceSpec
from rtml.supervisor import Supervised, prefix_output

# a module that prints known lines and exits: the Zen of Python
ZEN = ServiceSpec("zen", "this", "RTML_INGEST_PORT", 1, "prints and exits")
ROUTER = ServiceSpec("router", "this", "RTML_ROUTER_PORT", 2, "prints and exits")


async def test_each_line_of_a_child_comes_out_behind_its_aligned_name():
    zen, router = Supervised(ZEN, 1, {}), Supervised(ROUTER, 2, {})
    prefix_output([zen, router])
    out = io.BytesIO()
    zen.relay_to = out

    await zen.start()
    assert zen.process is not None and await zen.process.wait() == 0
    await zen.terminate()  # already exited: passes the last lines on

    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "zen    | The Zen of Python, by Tim Peters"
    assert len(lines) > 15 and all(line.startswith("zen    | ") for line in lines)
    assert router.prefix == b"router | "


async def test_without_a_prefix_the_child_writes_where_the_supervisor_does(capfd):
    zen = Supervised(ZEN, 1, {})

    await zen.start()
    assert zen.process is not None and await zen.process.wait() == 0

    assert capfd.readouterr().out.startswith("The Zen of Python")
