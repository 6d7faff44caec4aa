"""Ingestion's HTTP API as the client speaks it, with no I/O: the request each call
sends, how an answer is read, when a call is retried and for how long. The async
client (aiohttp) and the sync client (httpx) only move the bytes.

Idempotence: every event and every predict request carries its id from the moment
the call is built (an event's own id, or a new one), and every attempt of a call
sends the same bytes. A retry after a 503, a timeout or a dropped connection may
repeat a write that did reach the broker; consumers absorb the repeat by id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import msgpack
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential,
)
from tenacity.wait import wait_base

from rtml.client.errors import Rejected, ServerError, Unavailable
from rtml.shared.contracts import TASK_CHECKED_UPSTREAM, Message, Prediction, new_id
from rtml.shared.ingest_requests import WHOLE_ITEM, Problem

# a library's log: the application decides where it goes (rtml's services render it as JSON)
log = logging.getLogger(__name__)

# answers that say "not now" rather than "never" (the gateway reads its upstreams so too)
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
MSGPACK = "application/msgpack"
JSON = "application/json"
# the longest Retry-After in seconds that is read as a number (int() refuses thousands of digits)
_MAX_DELAY_DIGITS = 9

# an event: a contract message (rtml.shared.contracts) or its wire map as a mapping
Event = Message | Mapping[str, Any]


@dataclass(frozen=True)
class Call:
    """One HTTP request, the same bytes on every attempt."""

    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    # how long ingestion may hold the answer on purpose (a predict's wait_ms)
    server_wait_s: float = 0.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None = None


@dataclass(frozen=True)
class Pending:
    """A prediction asked for that was not made within the wait: fetch it later by
    ``request_id`` (``prediction(request_id)``)."""

    request_id: str


class NotNow(Exception):
    """An answer that asks to come back later (429, 502, 503, 504): the call is retried."""

    def __init__(self, status: int, error: str, retry_after_s: float | None) -> None:
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(f"{status} {error}")


class IngestionApi:
    """Where ingestion is, its bearer token, and the policy of every call: a timeout per
    attempt, retries of "not now" answers and connection failures for ``retry_for_s``
    seconds, each after the answer's ``Retry-After`` or an exponential backoff."""

    def __init__(
        self, url: str, token: str | SecretStr | None, *, retry_for_s: float, timeout_s: float
    ) -> None:
        self.url = url.rstrip("/")
        self._token = SecretStr(token) if isinstance(token, str) else token
        self.retry_for_s = retry_for_s
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        # the token itself never leaves through a repr, a log line or an error
        return f"IngestionApi({self.url!r}, token={'set' if self._token else 'none'})"

    def headers(self, call: Call) -> dict[str, str]:
        headers: dict[str, str] = {}
        if call.content_type:
            headers["Content-Type"] = call.content_type
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return headers

    def attempt_timeout_s(self, call: Call) -> float:
        return self.timeout_s + call.server_wait_s

    def retrying(self, connection_errors: tuple[type[BaseException], ...]) -> dict[str, Any]:
        """Keyword arguments of tenacity's ``Retrying`` / ``AsyncRetrying`` for one call."""
        return {
            "stop": stop_before_delay(self.retry_for_s),
            "wait": wait_retry_after(wait_exponential(multiplier=0.2, max=5)),
            "retry": retry_if_exception_type((NotNow, *connection_errors)),
            "before_sleep": _log_retry,
            "reraise": True,
        }

    def unavailable(self, call: Call, failure: BaseException, attempts: int) -> Unavailable:
        return Unavailable(
            f"{call.method} {self.url}{call.path} was not accepted within "
            f"{self.retry_for_s:g}s ({attempts} attempts); last: {failure!r}"
        )


class wait_retry_after(wait_base):  # lower case, as tenacity names its waits
    """Wait as long as the answer's ``Retry-After`` asks; ``otherwise`` when it has none."""

    def __init__(self, otherwise: wait_base) -> None:
        self._otherwise = otherwise

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, NotNow) and failure.retry_after_s is not None:
            return failure.retry_after_s
        return self._otherwise(retry_state)


def _log_retry(retry_state: RetryCallState) -> None:
    failure = retry_state.outcome.exception() if retry_state.outcome else None
    log.warning(
        "ingestion not available (%r): attempt %d, next in %.2fs",
        failure,
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP-date);
    None when there is none or it cannot be read."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= _MAX_DELAY_DIGITS else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def not_now(answer: Answer) -> Answer:
    """``answer``, unless it says "not now": then NotNow, which the call retries."""
    if answer.status in RETRYABLE_STATUSES:
        raise NotNow(answer.status, _error_of(answer)[0], retry_after_s(answer.retry_after))
    return answer


# --- the calls ---------------------------------------------------------------


def publish_call(events: Event | Iterable[Event]) -> Call:
    """``POST /v1/events`` with every event's id fixed: a message's own, a mapping's
    ``id``, or a new one for a mapping without."""
    batch = [events] if isinstance(events, Message | Mapping) else list(events)
    wire = [_with_id(event) for event in batch]
    body = msgpack.packb(wire, use_bin_type=True)
    return Call("POST", "/v1/events", body, MSGPACK)


def _with_id(event: Event) -> dict[str, Any]:
    if isinstance(event, Message):
        return event.to_wire()
    wire = dict(event)
    wire.setdefault("id", new_id())
    return wire


def predict_call(
    task: str,
    entities: Mapping[str, str] | None,
    inputs: Mapping[str, float] | None,
    *,
    wait_ms: int,
    request_id: str | None,
    ts: float | None,
) -> Call:
    """``POST /v1/predict[?wait_ms=N]`` with its request id fixed (``request_id`` or a
    new one); ``ts`` (event time) defaults to ingestion's clock."""
    body: dict[str, Any] = {
        "id": request_id or new_id(),
        "task": task,
        "entities": dict(entities or {}),
        "inputs": dict(inputs or {}),
    }
    if ts is not None:
        body["ts"] = ts
    params = {"wait_ms": str(wait_ms)} if wait_ms else {}
    return Call(
        "POST", "/v1/predict", json.dumps(body).encode(), JSON, params, server_wait_s=wait_ms / 1000
    )


def prediction_call(request_id: str) -> Call:
    return Call("GET", f"/v1/predictions/{quote(request_id, safe='')}")


# --- the answers -------------------------------------------------------------


def read_published(answer: Answer) -> list[str]:
    """The ids of the events the broker acknowledged, in the order sent."""
    return [str(i) for i in _accepted(answer)["ids"]]


def read_predicted(answer: Answer) -> Prediction | Pending:
    """The prediction (200, made within the wait) or the request id to fetch it by (202)."""
    body = _accepted(answer)
    if answer.status == 202:
        return Pending(str(body["request_id"]))
    return _prediction(body)


def read_prediction(answer: Answer) -> Prediction | None:
    """The prediction, or None when this ingestion replica does not have it (404: not
    made yet, or older than the ones it keeps)."""
    if answer.status == 404:
        return None
    return _prediction(_accepted(answer))


def _prediction(body: Any) -> Prediction:
    # ingestion checked the task: this process need not have the server's tasks installed
    return Prediction.model_validate(body, context={TASK_CHECKED_UPSTREAM: True})


def _accepted(answer: Answer) -> Any:
    """The JSON body of a 2xx answer; Rejected (4xx) or ServerError (5xx) otherwise."""
    if 200 <= answer.status < 300:
        return json.loads(answer.body)
    error, problems = _error_of(answer)
    if answer.status >= 500:
        raise ServerError(answer.status, error)
    raise Rejected(answer.status, error, problems)


def _error_of(answer: Answer) -> tuple[str, list[Problem]]:
    """The error ingestion names in an answer (``{"error", "problems"}``), or the start
    of the body when it is not ingestion's JSON (a proxy's page, say)."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        return answer.body[:200].decode(errors="replace") or f"HTTP {answer.status}", []
    problems = [
        Problem(p.get("index", -1), p.get("field", WHOLE_ITEM), p.get("reason", ""))
        for p in body.get("problems", [])
        if isinstance(p, dict)
    ]
    return str(body["error"]), problems
