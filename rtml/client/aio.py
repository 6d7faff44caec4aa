"""The asyncio client of ingestion's HTTP API, on aiohttp.

from rtml.client import AsyncClient
from rtml.tasks.eta.events import OrderPlaced

token = os.environ.get("RTML_INGEST_TOKEN")
async with AsyncClient("http://127.0.0.1:8080", token=token) as rtml:
    ids = await rtml.publish(OrderPlaced(ts=time.time(), order_id="o1", restaurant_id="r1",
                                         zone_id="z1", distance_km=2.5, n_items=2))
    answer = await rtml.predict("eta", entities={"restaurant_id": "r1", "zone_id": "z1"},
                                inputs={"distance_km": 2.5, "n_items": 2}, wait_ms=500)
    if isinstance(answer, Pending):
        prediction = await rtml.prediction(answer.request_id)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

import aiohttp
from pydantic import SecretStr
from tenacity import AsyncRetrying

from rtml.client import protocol
from rtml.client.protocol import Answer, Call, Event, NotNow, Pending
from rtml.shared.contracts import Prediction

# failures of an attempt that say nothing of the request itself: retried like a 503
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)


class AsyncClient:
    """Publishes events and asks for predictions through ingestion (``url``), with its
    bearer token when it has one (``RTML_INGEST_TOKEN`` on the server).

    Every call is retried on 429/502/503/504 (after the answer's ``Retry-After``, or an
    exponential backoff) and on connection failures, for ``retry_for_s`` seconds,
    with the same ids: a repeat is absorbed downstream. Then it raises ``Unavailable``.
    A 4xx raises ``Rejected`` naming each bad field and the reason. ``timeout_s`` bounds
    each attempt (plus a predict's ``wait_ms``). Give a ``session`` to share its
    connection pool; otherwise the client opens one and ``close()`` closes it.
    """

    def __init__(
        self,
        url: str,
        token: str | SecretStr | None = None,
        *,
        retry_for_s: float = 60.0,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._api = protocol.IngestionApi(url, token, retry_for_s=retry_for_s, timeout_s=timeout_s)
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:
        return f"AsyncClient({self._api!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def publish(self, events: Event | Iterable[Event]) -> list[str]:
        """Write one event or a batch to ``rtml.events``, all or nothing; returns their
        ids once the broker acknowledged every one."""
        return protocol.read_published(await self._send(protocol.publish_call(events)))

    async def predict(
        self,
        task: str,
        *,
        entities: Mapping[str, str] | None = None,
        inputs: Mapping[str, float] | None = None,
        wait_ms: int = 0,
        request_id: str | None = None,
        ts: float | None = None,
    ) -> Prediction | Pending:
        """Ask for a prediction; with ``wait_ms`` (at most 30,000) the prediction itself
        if it is made within that time, otherwise (and without) ``Pending`` with the
        request id to fetch it by."""
        call = protocol.predict_call(
            task, entities, inputs, wait_ms=wait_ms, request_id=request_id, ts=ts
        )
        return protocol.read_predicted(await self._send(call))

    async def prediction(self, request_id: str) -> Prediction | None:
        """The prediction of ``request_id``; None while it is not made yet (or when it is
        older than the ones ingestion keeps)."""
        return protocol.read_prediction(await self._send(protocol.prediction_call(request_id)))

    async def _send(self, call: Call) -> Answer:
        """The first answer to ``call`` that is not "not now", within the retry budget."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        retrying = AsyncRetrying(**self._api.retrying(CONNECTION_ERRORS))
        try:
            async for attempt in retrying:
                with attempt:
                    answer = protocol.not_now(await self._attempt(self._session, call))
        except (NotNow, *CONNECTION_ERRORS) as exc:
            raise self._api.unavailable(call, exc, retrying.statistics["attempt_number"]) from exc
        return answer

    async def _attempt(self, session: aiohttp.ClientSession, call: Call) -> Answer:
        async with session.request(
            call.method,
            self._api.url + call.path,
            data=call.body,
            params=call.params or None,
            headers=self._api.headers(call),
            timeout=aiohttp.ClientTimeout(total=self._api.attempt_timeout_s(call)),
        ) as response:
            body = await response.read()
            return Answer(response.status, body, response.headers.get("Retry-After"))
