"""What the client raises: a request refused (fix it, do not retry it), ingestion not
available within the retry budget (try again later, with the same ids), or a server
error."""

from __future__ import annotations

from collections.abc import Sequence

from rtml.shared.errors import RtmlError
from rtml.shared.ingest_requests import Problem


class ClientError(RtmlError):
    """Base class of the errors of ``rtml.client``."""


class Rejected(ClientError):
    """What was sent was refused and nothing of it was written; sending it again
    unchanged will not help. ``status`` is ingestion's HTTP status (400, 401, 413, ...),
    or None when the Kafka publisher refused the events before writing any;
    ``problems`` name each bad item's index in the batch (-1: the request as a
    whole), its field and the reason."""

    def __init__(self, status: int | None, error: str, problems: Sequence[Problem] = ()) -> None:
        self.status = status
        self.error = error
        self.problems = list(problems)
        details = "; ".join(f"[{p.index}] {p.field}: {p.reason}" for p in self.problems)
        prefix = f"{status} " if status is not None else ""
        super().__init__(f"{prefix}{error}" + (f": {details}" if details else ""))


class Unavailable(ClientError):
    """Ingestion did not accept the request within the retry budget: every attempt
    failed to connect or was answered "not now" (429, 502, 503, 504). Nothing is known
    to be written; send it again later with the same ids, and a part that did get
    through is absorbed downstream as a duplicate."""


class ServerError(ClientError):
    """Ingestion answered a 5xx that is not "not now": a fault on its side."""

    def __init__(self, status: int, error: str) -> None:
        self.status = status
        self.error = error
        super().__init__(f"{status} {error}")
