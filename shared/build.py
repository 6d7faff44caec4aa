"""What build of rtml is running: the package version and the git commit.

Recorded in every model's metadata (``model_store.py``), exported as
``rtml_build_info`` by every service and printed by ``rtml --version``.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


class BuildSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTML_", extra="ignore")

    git_commit: str | None = Field(
        default=None,
        description="the commit this build came from, for images built without a .git "
        "directory (unset: read from the checkout)",
    )


def package_version() -> str:
    try:
        return metadata.version("rtml")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    return BuildSettings().git_commit or read_git_commit(Path(__file__).resolve().parent)


def read_git_commit(start: Path) -> str | None:
    """HEAD's commit of the checkout holding ``start``, or None when there is none.

    Reads .git directly instead of running git, which slim images do not have.
    """
    git_dir = _find_git_dir(start)
    if git_dir is None:
        return None
    try:
        commit = _resolve_head(git_dir)
    except OSError:
        return None
    return commit if commit and _COMMIT.match(commit) else None


def _find_git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule points at its real git dir
            pointer = dot_git.read_text().strip()
            if pointer.startswith("gitdir: "):
                return (folder / pointer.removeprefix("gitdir: ")).resolve()
    return None


def _resolve_head(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head  # detached HEAD holds the commit itself
    ref = head.removeprefix("ref: ")
    common = _common_dir(git_dir)
    loose = common / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = common / "packed-refs"
    if not packed.is_file():
        return None  # a branch with no commits yet
    for line in packed.read_text().splitlines():
        commit, _, name = line.partition(" ")
        if name == ref:
            return commit
    return None


def _common_dir(git_dir: Path) -> Path:
    # worktrees keep branch refs in the main repository's git dir
    pointer = git_dir / "commondir"
    if pointer.is_file():
        return (git_dir / pointer.read_text().strip()).resolve()
    return git_dir
