"""The Python client of rtml: publish events and ask for predictions.

- ``AsyncClient`` (aiohttp) and ``Client`` (blocking, httpx): ingestion's HTTP API
  with its bearer token, retries of "not now" answers honouring ``Retry-After``, and
  ids fixed before the first attempt so that a retry is idempotent.
- ``KafkaPublisher``: domain events straight to ``rtml.events`` for a service with
  its own Kafka connection, checked and written exactly as ingestion writes them.

docs/PUBLISHING.md shows each with examples.
"""

from rtml.client.aio import AsyncClient
from rtml.client.errors import ClientError, Rejected, ServerError, Unavailable
from rtml.client.kafka import KafkaPublisher
from rtml.client.protocol import Event, Pending
from rtml.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Event",
    "KafkaPublisher",
    "Pending",
    "Rejected",
    "ServerError",
    "Unavailable",
]
