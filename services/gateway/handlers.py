"""The gateway's pure logic: the request-driven chain features -> router -> prediction.

No I/O here. ``predict`` runs one request through the three upstreams, in
sequence, through the ``Upstreams`` protocol that the HTTP adapter implements;
``read_answer`` turns one upstream's HTTP answer (status and decoded JSON body)
into the message the chain needs next, or into the failure the gateway
reports: 503 when the upstream is unavailable (it may come back: retry), 502
when it answered something the chain cannot use. Either names the upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, TypeVar, cast

from rtml.shared.contracts import (
    Message,
    PredictEnriched,
    Prediction,
    PredictRequest,
    PredictRouted,
    from_wire,
)
from rtml.shared.errors import ContractError
from rtml.shared.ingest_requests import parse_body, predict_request

Upstream = Literal["features", "router", "prediction"]
UPSTREAMS: tuple[Upstream, ...] = ("features", "router", "prediction")
# answers that say "not now" rather than "never": the gateway passes them on as 503
UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})

M = TypeVar("M", bound=Message)


class UpstreamFailure(Exception):
    """One upstream could not give the chain its next message."""

    def __init__(self, upstream: Upstream, status: int, reason: str) -> None:
        super().__init__(f"{upstream}: {reason}")
        self.upstream = upstream
        self.status = status
        self.reason = reason

    def to_json(self) -> dict[str, Any]:
        what = "unavailable" if self.status == 503 else "gave an unusable answer"
        return {
            "error": f"upstream {self.upstream} {what}: {self.reason}",
            "upstream": self.upstream,
        }


def unavailable(upstream: Upstream, reason: str) -> UpstreamFailure:
    return UpstreamFailure(upstream, 503, reason)


class Upstreams(Protocol):
    async def enrich(self, request: PredictRequest) -> PredictEnriched: ...

    async def route(self, enriched: PredictEnriched) -> PredictRouted: ...

    async def score(self, routed: PredictRouted) -> Prediction: ...


def parse_predict(body: bytes, content_type: str, now: float) -> PredictRequest:
    """A predict body exactly as ingestion's ``POST /v1/predict`` takes it; raises
    BadRequest (shared.ingest_requests) naming the field and the reason."""
    items = parse_body(body, content_type)
    return predict_request(items[0] if len(items) == 1 else items, now)


async def predict(request: PredictRequest, upstreams: Upstreams) -> Prediction:
    """The prediction of ``request``: its features, then its arm, then its score."""
    enriched = await upstreams.enrich(request)
    routed = await upstreams.route(enriched)
    return await upstreams.score(routed)


def read_answer(upstream: Upstream, status: int, body: Any, expect: type[M], request_id: str) -> M:
    """The message in an upstream's answer to ``request_id``, or UpstreamFailure."""
    if status in UNAVAILABLE_STATUSES:
        raise unavailable(upstream, f"answered {status}: {_error_text(body)}")
    if status != 200:
        raise UpstreamFailure(upstream, 502, f"answered {status}: {_error_text(body)}")
    if not isinstance(body, dict):
        raise UpstreamFailure(upstream, 502, "answered 200 without a JSON object")
    try:
        message = from_wire({**body, "schema": expect.SCHEMA}, expect)
    except ContractError as exc:
        raise UpstreamFailure(
            upstream, 502, f"answered an invalid {expect.SCHEMA}: {exc.field}: {exc.reason}"
        ) from exc
    if message.id != request_id:
        raise UpstreamFailure(
            upstream, 502, f"answered for request {message.id!r}, not {request_id!r}"
        )
    return cast(M, message)


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        problems = body.get("problems")
        if isinstance(problems, list) and problems:
            return f"{body.get('error')} ({problems})"
        if "error" in body:
            return str(body["error"])
    return "no error message"


def readiness(verdicts: Mapping[Upstream, bool | str]) -> bool | str:
    """The gateway is ready when every upstream is; otherwise which are not, and why."""
    failing = [f"{name}: {why}" for name, why in verdicts.items() if why is not True]
    return "; ".join(failing) if failing else True
