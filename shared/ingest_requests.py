"""The request bodies ingestion and the gateway take: parse a body (JSON or msgpack;
one item or a batch), validate what is in it, name each bad item. No I/O."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from rtml.shared.contracts import (
    MSGPACK_INT_MAX,
    MSGPACK_INT_MIN,
    Message,
    PredictRequest,
    from_wire,
    unpack,
)
from rtml.shared.errors import ContractError
from rtml.shared.tasks.registry import tasks

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
# the field a problem names when the item as a whole is wrong (not a map, say)
WHOLE_ITEM = "item"


@dataclass(frozen=True)
class Problem:
    """One bad item of a request: which one, which field, why."""

    index: int
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BadRequest(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"[{p.index}] {p.field}: {p.reason}" for p in problems))


def parse_body(body: bytes, content_type: str) -> list[Any]:
    """One item or a batch (a list, or ``{"events": [...]}``) as a list of items."""
    try:
        if content_type in MSGPACK_TYPES:
            document = unpack(body)
        elif content_type in ("application/json", ""):
            document = json.loads(body)
        else:
            raise BadRequest([Problem(-1, "content-type", f"unsupported {content_type!r}")])
    except (ContractError, ValueError) as exc:
        raise BadRequest([Problem(-1, "body", f"not decodable: {exc}")]) from exc
    except RecursionError:
        # json nests only as deep as the interpreter's stack allows
        raise BadRequest([Problem(-1, "body", "not decodable: nested too deeply")]) from None
    if isinstance(document, dict) and isinstance(document.get("events"), list):
        return document["events"]
    return document if isinstance(document, list) else [document]


def validate_events(items: list[Any], max_batch: int) -> list[Message]:
    """Every item as a domain event, or BadRequest naming each bad one."""
    if not items:
        raise BadRequest([Problem(-1, "body", "no events")])
    if len(items) > max_batch:
        raise BadRequest(
            [Problem(-1, "body", f"{len(items)} events exceed the batch limit {max_batch}")]
        )
    events: list[Message] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        try:
            event = from_wire(item, tasks().events)
        except ContractError as exc:
            problems.append(Problem(index, exc.field or WHOLE_ITEM, exc.reason))
            continue
        too_big = _field_beyond_msgpack_ints(event)
        if too_big:
            problems.append(Problem(index, too_big, "integer beyond the 64-bit range"))
        events.append(event)
    if problems:
        raise BadRequest(problems)
    return events


def _field_beyond_msgpack_ints(message: Message) -> str | None:
    """The field whose integer msgpack cannot carry (JSON integers have no bound)."""
    for name, value in message:
        if isinstance(value, int) and not MSGPACK_INT_MIN <= value <= MSGPACK_INT_MAX:
            return name
    return None


def predict_request(item: Any, now: float | None = None) -> PredictRequest:
    """A predict body (task, entities, inputs; ts defaults to now) as a request."""
    if not isinstance(item, dict):
        raise BadRequest([Problem(0, "body", "expected a JSON object")])
    now = time.time() if now is None else now
    wire = {"schema": PredictRequest.SCHEMA, "ts": now, **item, "received_at": now}
    try:
        return cast(PredictRequest, from_wire(wire, PredictRequest))
    except ContractError as exc:
        raise BadRequest([Problem(0, exc.field or WHOLE_ITEM, exc.reason)]) from exc
