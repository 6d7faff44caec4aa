"""What ``rtml demo`` reports, computed from the topics' contents. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rtml.shared.contracts import DlqRecord, Message, ModelAnnouncement, Prediction, TrainingExample
from rtml.shared.timings import hops


@dataclass(frozen=True)
class Phases:
    """Event-time boundaries of the story: the storm, and the first model that learnt it."""

    storm_ts: float
    # event time the stream had reached when the first fine-tuned version was announced
    adapted_ts: float | None
    # how long "right after the storm" lasts, in event time
    aftermath_s: float = 3600.0


@dataclass
class Summary:
    events: int = 0
    predictions: int = 0
    examples: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    # per hop of the predict chain (shared/timings.py): where the latency went
    hops_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    mae: dict[str, float | None] = field(default_factory=dict)
    models: list[ModelAnnouncement] = field(default_factory=list)
    traffic_share: dict[str, float] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)

    @property
    def fine_tuned(self) -> list[ModelAnnouncement]:
        return [m for m in self.models if m.action == "registered" and m.parent_version]


def summarize(
    events: int, predictions: Sequence[Prediction], examples: Sequence[TrainingExample],
    announcements: Sequence[ModelAnnouncement], dead: Sequence[DlqRecord], phases: Phases,
) -> Summary:  # fmt: skip
    summary = Summary(events=events, predictions=len(predictions), examples=len(examples))
    summary.latency_ms = latency_percentiles(predictions)
    summary.hops_ms = hop_percentiles(predictions)
    fine_tuned = {
        a.model_version for a in announcements if a.action == "registered" and a.parent_version
    }
    summary.mae = mae_by_phase(examples, phases, fine_tuned)
    summary.models = list(announcements)
    summary.traffic_share = traffic_share(predictions, since_ts=phases.adapted_ts)
    summary.dead_letters = Counter(f"{d.service}/{d.reason}" for d in dead)
    return summary


def latency_percentiles(predictions: Sequence[Prediction]) -> dict[str, float]:
    totals = [p.timings_ms["total"] for p in predictions if "total" in p.timings_ms]
    if not totals:
        return {}
    return {f"p{q}": float(np.percentile(totals, q)) for q in (50, 99)}


def hop_percentiles(predictions: Sequence[Prediction]) -> dict[str, dict[str, float]]:
    """p50 and p99 of each hop of the predictions' timings, in the chain's order."""
    spent: dict[str, list[float]] = {}
    for prediction in predictions:
        for hop, ms in hops(prediction.timings_ms).items():
            spent.setdefault(hop, []).append(ms)
    return {
        hop: {f"p{q}": float(np.percentile(values, q)) for q in (50, 99)}
        for hop, values in spent.items()
    }


def mae_by_phase(
    examples: Sequence[TrainingExample], phases: Phases, fine_tuned: set[str]
) -> dict[str, float | None]:
    """MAE of what was served, by the event time of the request: before the storm,
    in its first hour, and once a fine-tuned version existed — split between the
    requests the fine-tuned versions answered and those the old ones still did."""
    adapted = phases.adapted_ts if phases.adapted_ts is not None else float("inf")
    storm_end = phases.storm_ts + phases.aftermath_s
    later = [e for e in examples if e.request_ts >= adapted]
    return {
        "before the storm": _mae(e for e in examples if e.request_ts < phases.storm_ts),
        "first hour of the storm": _mae(
            e for e in examples if phases.storm_ts <= e.request_ts < storm_end
        ),
        "after continual learning (fine-tuned versions)": _mae(
            e for e in later if e.model_version in fine_tuned
        ),
        "same period, older versions": _mae(e for e in later if e.model_version not in fine_tuned),
    }


def _mae(examples: Iterable[TrainingExample]) -> float | None:
    errors = [abs(e.prediction - e.label) for e in examples if isinstance(e.prediction, float)]
    return float(np.mean(errors)) if errors else None


def traffic_share(predictions: Sequence[Prediction], since_ts: float | None) -> dict[str, float]:
    chosen = [p for p in predictions if since_ts is None or p.request_ts >= since_ts]
    counts = Counter(p.model_version for p in chosen)
    total = sum(counts.values())
    return {version: count / total for version, count in counts.most_common()} if total else {}


def lineage_lines(announcements: Sequence[ModelAnnouncement]) -> list[str]:
    """The registered versions as a tree, each with what triggered its training (error
    drift, input drift on a feature, schedule...) and the reason it was registered."""
    registered = {a.model_version: a for a in announcements if a.action == "registered"}
    promoted = {a.model_version for a in announcements if a.action == "promoted"}
    children: dict[str | None, list[str]] = {}
    for version, announcement in registered.items():
        parent = announcement.parent_version if announcement.parent_version in registered else None
        children.setdefault(parent, []).append(version)
    lines: list[str] = []

    def walk(version: str, depth: int) -> None:
        announcement = registered[version]
        marks = " [champion]" if version in promoted else ""
        said = [announcement.trigger.text] if announcement.trigger else []
        said += [announcement.reason] if announcement.reason else []
        why = f" — {'; '.join(said)}" if said else ""
        lines.append(f"{'  ' * depth}{'└─ ' if depth else ''}{version}{marks}{why}")
        for child in children.get(version, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return lines


def only(kind: type[Message], messages: Sequence[Message | None]) -> list:
    return [m for m in messages if isinstance(m, kind)]
