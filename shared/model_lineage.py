"""Lineage rendering: the tree ``rtml models lineage`` prints for a model version.

The lineage itself (a version and its ancestors) is the store's
(``ModelStore.lineage``); this module only draws it: the version's ancestry
from the model trained from scratch, then its descendants, the task's
champion and the version asked for marked.
"""

from __future__ import annotations

import itertools

from rtml.shared.model_store import ModelRecord, ModelStore

_BRANCH = "├── "
_LAST_BRANCH = "└── "
_CONTINUATION = {"": "", _BRANCH: "│   ", _LAST_BRANCH: "    "}


def render_lineage_tree(store: ModelStore, version: str) -> str:
    """Ancestry of ``version`` from the from-scratch root down, then all its descendants.

    Siblings of ancestors are left out: the tree answers "where did this model
    come from and what was built on it".
    """
    ancestry = store.lineage(version)[::-1]
    target = ancestry[-1]
    champion = store.champion(target.task)
    champion_version = champion.version if champion else None
    children_by_parent: dict[str | None, list[ModelRecord]] = {}
    for record in store.list(target.task):
        children_by_parent.setdefault(record.parent_version, []).append(record)
    next_in_chain = {parent.version: [child] for parent, child in itertools.pairwise(ancestry)}

    def shown_children(record: ModelRecord) -> list[ModelRecord]:
        return next_in_chain.get(record.version) or children_by_parent.get(record.version, [])

    def label(record: ModelRecord) -> str:
        metrics = " ".join(f"{name}={value:.4g}" for name, value in sorted(record.metrics.items()))
        marks = (" [champion]" if record.version == champion_version else "") + (
            " ◀" if record.version == version else ""
        )
        return f"{record.version}  {record.feature_set}  {metrics}".rstrip() + marks

    lines: list[str] = []
    # iterative, because continual learning can grow chains deeper than Python's recursion limit
    stack: list[tuple[ModelRecord, str, str]] = [(ancestry[0], "", "")]
    while stack:
        record, prefix, connector = stack.pop()
        lines.append(f"{prefix}{connector}{label(record)}")
        kids = shown_children(record)
        child_prefix = prefix + _CONTINUATION[connector]
        for index in reversed(range(len(kids))):
            kid_connector = _LAST_BRANCH if index == len(kids) - 1 else _BRANCH
            stack.append((kids[index], child_prefix, kid_connector))
    return "\n".join(lines)
