"""The blocking client of ingestion's HTTP API, on httpx: the same calls, answers and
retries as ``AsyncClient`` (``protocol.py``), for code without an event loop.

    from rtml.client import Client

    with Client("http://127.0.0.1:8080", token=os.environ.get("RTML_INGEST_TOKEN")) as rtml:
        rtml.publish([{"schema": "courier_online", "ts": time.time(),
                       "courier_id": "c1", "zone_id": "z1"}])
        answer = rtml.predict("eta", entities={"restaurant_id": "r1", "zone_id": "z1"},
                              inputs={"distance_km": 2.5, "n_items": 2}, wait_ms=500)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

import httpx
from pydantic import SecretStr
from tenacity import Retrying

from rtml.client import protocol
from rtml.client.protocol import Answer, Call, Event, NotNow, Pending
from rtml.shared.contracts import Prediction

# failures of an attempt that say nothing of the request itself (connect, read,
# timeouts, a dropped connection): retried like a 503
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError,)


class Client:
    """Publishes events and asks for predictions through ingestion (``url``); see
    ``AsyncClient`` for the retries, the errors and the parameters. Give an ``http``
    client to share its connection pool; otherwise the client opens one and
    ``close()`` closes it."""

    def __init__(
        self,
        url: str,
        token: str | SecretStr | None = None,
        *,
        retry_for_s: float = 60.0,
        timeout_s: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._api = protocol.IngestionApi(url, token, retry_for_s=retry_for_s, timeout_s=timeout_s)
        self._http = http or httpx.Client()
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"Client({self._api!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def publish(self, events: Event | Iterable[Event]) -> list[str]:
        """As ``AsyncClient.publish``: the events' ids once all are acknowledged."""
        return protocol.read_published(self._send(protocol.publish_call(events)))

    def predict(
        self,
        task: str,
        *,
        entities: Mapping[str, str] | None = None,
        inputs: Mapping[str, float] | None = None,
        wait_ms: int = 0,
        request_id: str | None = None,
        ts: float | None = None,
    ) -> Prediction | Pending:
        """As ``AsyncClient.predict``: the prediction, or ``Pending`` with its request id."""
        call = protocol.predict_call(
            task, entities, inputs, wait_ms=wait_ms, request_id=request_id, ts=ts
        )
        return protocol.read_predicted(self._send(call))

    def prediction(self, request_id: str) -> Prediction | None:
        """As ``AsyncClient.prediction``: None while it is not made."""
        return protocol.read_prediction(self._send(protocol.prediction_call(request_id)))

    def _send(self, call: Call) -> Answer:
        """The first answer to ``call`` that is not "not now", within the retry budget."""
        retrying = Retrying(**self._api.retrying(CONNECTION_ERRORS))
        try:
            for attempt in retrying:
                with attempt:
                    answer = protocol.not_now(self._attempt(call))
        except (NotNow, *CONNECTION_ERRORS) as exc:
            raise self._api.unavailable(call, exc, retrying.statistics["attempt_number"]) from exc
        return answer

    def _attempt(self, call: Call) -> Answer:
        response = self._http.request(
            call.method,
            self._api.url + call.path,
            content=call.body,
            params=call.params,
            headers=self._api.headers(call),
            timeout=self._api.attempt_timeout_s(call),
        )
        return Answer(response.status_code, response.content, response.headers.get("Retry-After"))
