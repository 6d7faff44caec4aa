"""Which rewards a task's posterior already holds: exactly-once folding by log position.

A reward is folded once per position in the rewards log and once per request
id. Per rewards partition the ledger keeps

- ``next``: the first offset not folded yet. A checkpoint stores it next to the
  posterior, so a restart folds exactly the rewards after the checkpoint;
- the request ids of the records in the last ``window`` offsets. A reward whose
  id is among them is a duplicate (the collector is at-least-once and may send
  a reward twice; both copies carry the request id and so land on the same
  partition).

The window is a function of the log alone (the ids at offsets [x - window, x)
when the record at x arrives), never of how fetches happened to interleave.
So it need not be checkpointed: a restarted router re-reads the ``window``
offsets before ``next`` and gets the window it had, and two replicas reading
the same partitions hold the same window. Duplicates further apart than the
window are counted twice, by every replica and every restart alike.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, slots=True)
class LogPosition:
    partition: int
    offset: int


class Admission(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    # before the checkpoint: already in the posterior, read again only to rebuild the window
    CHECKPOINTED = "checkpointed"


@dataclass(slots=True)
class _Partition:
    next: int = 0
    recent: deque[tuple[int, str]] = field(default_factory=deque)
    ids: Counter[str] = field(default_factory=Counter)

    def forget_before(self, offset: int) -> None:
        while self.recent and self.recent[0][0] < offset:
            _, request_id = self.recent.popleft()
            self.ids[request_id] -= 1
            if not self.ids[request_id]:
                del self.ids[request_id]

    def remember(self, offset: int, request_id: str) -> None:
        self.recent.append((offset, request_id))
        self.ids[request_id] += 1


class RewardLedger:
    def __init__(self, window: int, next_offsets: Mapping[int, int] | None = None) -> None:
        if window < 1:
            raise ValueError(f"the dedupe window must be >= 1 offset, got {window}")
        self.window = window
        self._partitions: dict[int, _Partition] = {}
        for partition, offset in (next_offsets or {}).items():
            self._partitions[partition] = _Partition(next=offset)

    def admit(self, position: LogPosition, request_id: str) -> Admission:
        """Record the reward at ``position``; says whether it is new to the posterior."""
        partition = self._partitions.setdefault(position.partition, _Partition())
        partition.forget_before(position.offset - self.window)
        repeated = request_id in partition.ids
        # every record joins the window, repeats included, so that the window stays
        # exactly "the ids at the last `window` offsets" however it was built
        partition.remember(position.offset, request_id)
        if position.offset < partition.next:
            return Admission.CHECKPOINTED
        partition.next = position.offset + 1
        return Admission.DUPLICATE if repeated else Admission.NEW

    def next_offsets(self) -> dict[int, int]:
        """Per partition, the first offset not folded yet: what a checkpoint stores."""
        return {number: partition.next for number, partition in self._partitions.items()}

    def resume_offset(self, partition: int) -> int:
        """Where to start reading ``partition`` so that the window is rebuilt whole."""
        known = self._partitions.get(partition)
        return max(0, known.next - self.window) if known else 0
