"""Print rtml's runtime requirements from pyproject.toml, one per line.

The Dockerfile installs these in a layer of their own, before any source is
copied, so that editing code never re-downloads the dependencies: that layer
is rebuilt only when pyproject.toml (or this file) changes.

``--xgboost NAME`` swaps the ``xgboost`` distribution for another one that
provides the same ``xgboost`` module. The image uses ``xgboost-cpu``: the
default ``xgboost`` wheel for x86_64 pulls in NVIDIA NCCL (hundreds of MB) for
GPU training that rtml never does. Pass ``--xgboost xgboost`` to keep it.

``--extras mlflow`` (comma-separated names) adds those optional dependencies,
e.g. the MLflow client for the peer registry (the image's ``RTML_EXTRAS``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", re.DOTALL)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(
    pyproject: dict, xgboost: str = "xgboost", extras: tuple[str, ...] = ()
) -> list[str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        raise ValueError(f"no optional dependencies named {unknown} in pyproject.toml")
    out = []
    for requirement in [*project["dependencies"], *(r for e in extras for r in optional[e])]:
        match = _NAME.match(requirement)
        if match is None:
            raise ValueError(f"cannot read the requirement {requirement!r}")
        name, rest = match.groups()
        if _normalise(name) == "xgboost":
            name = xgboost
        out.append(f"{name}{rest}".strip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", nargs="?", default="pyproject.toml")
    parser.add_argument("--xgboost", default="xgboost", help="distribution providing `xgboost`")
    parser.add_argument("--extras", default="", help="optional dependencies too, e.g. mlflow")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        pyproject = tomllib.load(f)
    extras = tuple(name.strip() for name in args.extras.split(",") if name.strip())
    lines = requirements(pyproject, args.xgboost, extras)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
