"""The join state's mappings over faust tables: one partition's keys, values as bytes.

``JoinState`` (pure) wants three ``MutableMapping``s; the collector gives it
``PartitionView``s of faust tables, whose changelogs make the state survive a
restart. Two things the plain table would get wrong:

- **Partition.** A table is one store for every partition this worker holds,
  but a ``JoinState`` covers one partition of the join topic (its watermark and
  deadlines are that partition's), so a view shows the keys of its partition
  only, computed with the producer's default partitioner, as the re-keying
  producer placed them.
- **Order of effects.** A state change must reach the changelog *after* the
  outputs it caused are acknowledged: in the other order a crash between the
  two would leave "emitted" on record with nothing emitted, and the
  redelivered record would be absorbed as a repeat (a lost example). So a
  view holds its writes until ``flush()``; a crash before it redelivers the
  record and repeats the output (downstream absorbs repeats by id).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from rtml.shared.contracts import decode, encode
from rtml.shared.kafka import partition_of

T = TypeVar("T")
_DELETED = None


class Codec(Generic[T]):
    def __init__(self, dumps: Callable[[T], bytes], loads: Callable[[bytes], T]) -> None:
        self.dumps = dumps
        self.loads = loads


MESSAGES: Codec[Any] = Codec(encode, decode)
_DOUBLE = struct.Struct("!d")
FLOATS: Codec[float] = Codec(_DOUBLE.pack, lambda data: _DOUBLE.unpack(data)[0])


class PartitionView(MutableMapping[str, T]):
    """One partition of a bytes -> bytes faust table as a ``str -> T`` mapping with
    writes held until ``flush()``, which must run inside the agent (faust sends a
    table change to the changelog partition of the record being processed)."""

    def __init__(
        self, table: MutableMapping[bytes, bytes], partition: int, partitions: int, codec: Codec[T]
    ) -> None:
        self._table = table
        self._partition = partition
        self._partitions = partitions
        self._codec = codec
        self._pending: dict[bytes, bytes | None] = {}

    def __getitem__(self, key: str) -> T:
        raw = self._raw(key.encode())
        if raw is None:
            raise KeyError(key)
        return self._codec.loads(raw)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._raw(key.encode()) is not None

    def __setitem__(self, key: str, value: T) -> None:
        self._pending[key.encode()] = self._codec.dumps(value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending[key.encode()] = _DELETED

    def __iter__(self) -> Iterator[str]:
        for key in self._keys():
            if self._raw(key) is not None:
                yield key.decode()

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> None:
        for key, value in self._pending.items():
            if value is None:
                if key in self._table:  # a key set and deleted before a flush never got there
                    del self._table[key]
            else:
                self._table[key] = value
        self._pending.clear()

    def _raw(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self._table.get(key)

    def _keys(self) -> list[bytes]:
        stored = [k for k in self._table if partition_of(k, self._partitions) == self._partition]
        return [*stored, *(k for k in self._pending if k not in self._table)]
