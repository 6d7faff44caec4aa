"""Re-keying by join key: what goes from rtml.predictions and rtml.events onto the join topic.

Pure. A prediction and its label come keyed differently (request id; zone or
session), so both are re-sent keyed by their join key (``join.py``): the two
sides of a join then meet in one partition of the join topic, which is where
the join state of that key lives. The value goes on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from rtml.services.collector.join import join_key_of_label, join_key_of_prediction
from rtml.shared.contracts import Message, Prediction, decode
from rtml.shared.tasks.registry import tasks


@cache
def label_kinds() -> tuple[type[Message], ...]:
    """The label events of the loaded tasks."""
    return tuple(tasks()[name].label.event for name in tasks())


@cache
def _label_markers() -> tuple[bytes, ...]:
    # Most of rtml.events is no label. A label's schema name is in its bytes verbatim
    # whatever msgpack string header encodes it, so an event without any label's name
    # is skipped undecoded; one that has it by chance is decoded and skipped then.
    return tuple(kind.SCHEMA.encode() for kind in label_kinds())


@dataclass(frozen=True)
class Rekeyed:
    key: bytes
    value: bytes
    # a prediction's: the id of its predict request (a label has none)
    request_id: str | None = None


def rekey_prediction(value: bytes) -> Rekeyed | None:
    """The prediction under its join key; None when it has none (counted by the caller).
    Raises ContractError for what is not a valid prediction."""
    prediction = decode(value, Prediction)
    key = join_key_of_prediction(prediction)  # type: ignore[arg-type]
    return Rekeyed(key.encode(), value, prediction.id) if key is not None else None


def rekey_event(value: bytes) -> Rekeyed | None:
    """A label under its join key; None for every other event.
    Raises ContractError for a label-like record that does not decode."""
    if not any(marker in value for marker in _label_markers()):
        return None
    key = join_key_of_label(decode(value))
    return Rekeyed(key.encode(), value) if key is not None else None


def decode_joinable(value: bytes) -> Message:
    """A record of the join topic (a prediction or a label); raises ContractError for
    anything else."""
    return decode(value, (Prediction, *label_kinds()))
