"""Event log files: a run of messages kept on disk for the offline tools.

Batch features and bootstrap training read the same messages the live stack sees,
so a log holds contract messages exactly as they go on the wire.

Format (version 1):

- the 8-byte magic ``b"RTMLEVL1"``;
- then one record per message, in the order written: a 4-byte big-endian unsigned
  length, then that many bytes of the message's msgpack encoding
  (``shared.contracts.encode``).

Records are length-delimited rather than a bare msgpack stream so that a reader can
enforce the contract's size limit before reading a record, and can tell a truncated
file from a complete one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from rtml.shared.contracts import MAX_MESSAGE_BYTES, Message, decode, encode
from rtml.shared.errors import RtmlError

MAGIC = b"RTMLEVL1"
_LENGTH = struct.Struct(">I")


class EventLogError(RtmlError):
    """A file that is not a complete rtml event log, or a message too large for one."""


def write_event_log(path: str | os.PathLike[str], messages: Iterable[Message]) -> int:
    """Write ``messages`` to a new log at ``path``; returns how many were written.

    The log appears at ``path`` only once complete, so a reader never sees half of one.
    """
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    count = 0
    try:
        with partial.open("wb") as out:
            out.write(MAGIC)
            for message in messages:
                record = encode(message)
                if len(record) > MAX_MESSAGE_BYTES:
                    raise EventLogError(
                        f"message {message.id} encodes to {len(record)} bytes, "
                        f"over the {MAX_MESSAGE_BYTES} a reader accepts"
                    )
                out.write(_LENGTH.pack(len(record)))
                out.write(record)
                count += 1
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def read_event_log(path: str | os.PathLike[str]) -> Iterator[Message]:
    """Yield the messages of the log at ``path`` in the order they were written.

    Raises EventLogError for a foreign or truncated file and ContractError for a
    record that does not satisfy its contract.
    """
    with Path(path).open("rb") as source:
        if source.read(len(MAGIC)) != MAGIC:
            raise EventLogError(f"{path}: not an rtml event log (bad magic)")
        index = 0
        while header := source.read(_LENGTH.size):
            record = _read_record(source, header, path, index)
            yield decode(record)
            index += 1


def _read_record(source: BinaryIO, header: bytes, path: object, index: int) -> bytes:
    if len(header) < _LENGTH.size:
        raise EventLogError(f"{path}: truncated in the length of record {index}")
    (size,) = _LENGTH.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise EventLogError(f"{path}: record {index} claims {size} bytes, over the limit")
    record = source.read(size)
    if len(record) < size:
        raise EventLogError(f"{path}: truncated in record {index}")
    return record
