"""A small reader for the Dockerfile and .dockerignore: enough to check them
without a Docker engine (none runs on these machines)."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def copies(self) -> list[tuple[dict[str, str], list[str], str]]:
        """(flags, sources, absolute destination) of every COPY, resolved against WORKDIR."""
        out = []
        workdir = "/"
        for ins in self.instructions:
            if ins.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, ins.args.strip())
            elif ins.keyword in ("COPY", "ADD"):
                words = shlex.split(ins.args)
                flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
                paths = [w for w in words if not w.startswith("--")]
                *sources, dest = paths
                dest = posixpath.normpath(posixpath.join(workdir, dest))
                out.append((flags, sources, dest))
        return out

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            assert match, f"line {number}: unreadable FROM"
            stages.append(Stage(base=expand(match.group(1), args), name=match.group(2)))
        elif not stages:
            assert keyword == "ARG", f"line {number}: {keyword} before the first FROM"
            name, _, default = rest.strip().partition("=")
            args[name] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, rest.strip(), number))
    return args, stages


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def _pattern(glob: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        elif glob[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(glob[i])
            i += 1
    return re.compile(out + "$")


def dockerignore_excludes(ignore_file: Path, relpath: str) -> bool:
    """Whether the build context leaves ``relpath`` out (last matching rule wins;
    a rule matching a directory covers everything under it)."""
    rules = []
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _pattern(posixpath.normpath(line.lstrip("!").strip("/")))))
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in rules:
        if any(pattern.match(c) for c in candidates):
            excluded = not negate
    return excluded
