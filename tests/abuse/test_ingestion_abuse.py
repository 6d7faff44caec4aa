"""Hostile HTTP clients against a real ingestion process on a broker of its own.

Whatever arrives, ingestion answers 2xx or a 4xx that names the field and the
reason, never a 5xx, and keeps running; bodies it refuses are never held in
memory whole, and a client that drips its body is cut off.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from rtml.shared.contracts import PredictRequest
from rtml.shared.embedded_broker import EmbeddedBroker, free_port
from rtml.shared.kafka import ensure_topics
from rtml.shared.settings import Settings
from rtml.shared.tasks.registry import tasks

from tests.abuse.frames import EXAMPLES, msgpack_values
from tests.helpers import metric, service_process

TOKEN = "abuse-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY_LIMIT = 256 * 1024
BODY_TIMEOUT_S = 2.0
# what a refused body may cost the process at most; a buffered bomb costs 200 MiB
RSS_GROWTH_BOUND = 50 * 2**20
fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
)


@dataclass(frozen=True)
class Ingestion:
    url: str
    port: int
    process: subprocess.Popen

    def alive(self) -> bool:
        healthy = requests.get(f"{self.url}/healthz", timeout=10).status_code == 200
        return self.process.poll() is None and healthy

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: what the fuzzing writes stays out of other tests' topics."""
    with EmbeddedBroker(port=free_port()) as running:
        asyncio.run(ensure_topics(Settings(kafka_port=running.port)))
        yield running


@pytest.fixture(scope="module")
def ingestion(own_broker: EmbeddedBroker) -> Iterator[Ingestion]:
    broker = own_broker
    port = free_port()
    env = {
        "RTML_KAFKA_PORT": str(broker.port),
        "RTML_INGEST_PORT": str(port),
        "RTML_INGEST_TOKEN": TOKEN,
        "RTML_INGEST_MAX_BODY_BYTES": str(BODY_LIMIT),
        "RTML_INGEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        # keeps generated batches small: the document says maxItems from this
        "RTML_INGEST_MAX_BATCH": "20",
    }
    url = f"http://127.0.0.1:{port}"
    with service_process("rtml.services.ingestion", env, f"{url}/readyz") as process:
        yield Ingestion(url, port, process)
        assert process.poll() is None, "ingestion died during the abuse suite"


# --- the OpenAPI document -------------------------------------------------------------


def test_openapi_document_is_valid_and_made_from_the_contracts(ingestion: Ingestion) -> None:
    document = requests.get(f"{ingestion.url}/openapi.json", timeout=10).json()
    validate(document)
    assert len(list(schemathesis.openapi.from_dict(document).get_all_operations())) == 5
    components = document["components"]["schemas"]
    for kind in (*tasks().events, PredictRequest):
        declared = set(kind.model_fields) - {"received_at"}
        schema = components["PredictBody" if kind is PredictRequest else kind.__name__]
        assert declared <= set(schema["properties"]), kind.__name__
    assert components["OrderPlaced"]["properties"]["n_items"] == {
        "maximum": 1000, "minimum": 1, "title": "N Items", "type": "integer",
    }  # fmt: skip
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.fixture(scope="module")
def api_schema(ingestion: Ingestion) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{ingestion.url}/openapi.json")
    # generated cases only (the coverage phase adds hundreds of boundary cases);
    # msgpack bodies are left to the fuzzing below, which knows how to encode them
    schema.config.phases.update(phases=["fuzzing"])
    return schema


api = schemathesis.pytest.from_fixture("api_schema")


@api.parametrize()
@fuzz_settings
def test_api_conforms_to_its_document_and_never_fails(case: schemathesis.Case) -> None:
    """Schema-valid and schema-breaking requests: never a 5xx, every answer as documented,
    every schema-valid body accepted.

    Schema-breaking bodies may be accepted: the contracts read leniently (pydantic's
    lax mode takes "5" for the integer 5), which the document cannot express.
    """
    wait_ms = (case.query or {}).get("wait_ms")
    if str(wait_ms).isdigit() and int(str(wait_ms)) > 100:
        # a valid wait of up to 30 s for a prediction that never comes only costs time
        case.query["wait_ms"] = 100
    case.call_and_validate(
        headers=AUTH,
        # ignored_auth re-sends every case without the token, doubling the cost of the
        # run; tests/integration/test_ingestion.py covers the 401s
        excluded_checks=[
            schemathesis.checks.negative_data_rejection,
            schemathesis.checks.ignored_auth,
        ],
    )


# --- fuzzed bodies ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
    max_leaves=25,
)
event_like = st.builds(
    lambda schema, fields: {"schema": schema, **fields},
    st.sampled_from([k.SCHEMA for k in tasks().events] + ["", "predict_request", "x" * 2000]),
    st.dictionaries(st.sampled_from(["ts", "id", "order_id", "n_items", "version"]), json_values),
)
hostile_text = st.sampled_from(
    [
        "[" * 200_000 + "]" * 200_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "1e999",
        "9" * 5000,
        '{"schema": "order_placed", "ts": 1e400}',
        '{"schema": "item_viewed", "ts": 1, "session_id": "s", "item_id": 99999999999999999999999}',
        '{"schema": "order_placed", "ts": ' + "9" * 5000 + "}",
        '{"schema": "\ud800"}',
        "\ufeff{}",
        "[]",
        "{}",
        "",
    ]
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/msgpack",
        "application/x-msgpack",
        "text/plain",
        "",
        "application/json; charset=utf-16",
        "multipart/form-data; boundary=x",
        "ü/ß",
    ]
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    event_like.map(lambda v: json.dumps(v).encode()),
    st.lists(event_like, max_size=5).map(lambda v: json.dumps(v).encode()),
    msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    hostile_text.map(lambda v: v.encode("utf-8", "surrogatepass")),
)
paths = st.sampled_from(
    ["/v1/events", "/v1/predict", "/v1/predict?wait_ms=10", "/v1/predict?wait_ms=²"]
)


@given(path=paths, body=bodies, content_type=content_types)
@fuzz_settings
def test_fuzzed_bodies_get_2xx_or_a_4xx_naming_field_and_reason(
    ingestion: Ingestion, path: str, body: bytes, content_type: str
) -> None:
    headers = {**AUTH, "Content-Type": content_type.encode("utf-8").decode("latin-1")}
    response = requests.post(f"{ingestion.url}{path}", data=body, headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_explained(response)


def assert_explained(response: requests.Response) -> None:
    answer = response.json()
    assert answer["error"]
    for problem in answer.get("problems", []):
        assert problem["field"] and problem["reason"]
    if response.status_code == 400:
        assert answer["problems"]


def test_process_survived_the_fuzzing(ingestion: Ingestion) -> None:
    assert ingestion.alive()


# --- oversize, compressed and slow bodies -------------------------------------------------


def raw_request(port: int, path: str, headers: dict[str, str]) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return connection


def read_status_line(connection: socket.socket) -> bytes:
    received = b""
    while b"\r\n" not in received and (chunk := connection.recv(65536)):
        received += chunk
    return received.partition(b"\r\n")[0]


def wait_closed(connection: socket.socket) -> None:
    """Returns once the server has closed the connection."""
    while connection.recv(65536):
        pass


def test_declared_oversize_body_is_refused_before_it_is_sent(ingestion: Ingestion) -> None:
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": str(100 * 2**20)}
    with raw_request(ingestion.port, "/v1/events", headers) as connection:
        # not a byte of the body was sent: the answer comes from the headers alone
        assert read_status_line(connection).startswith(b"HTTP/1.1 413")


def test_chunked_oversize_body_is_refused_and_not_buffered(ingestion: Ingestion) -> None:
    before = ingestion.rss()
    for _ in range(5):
        headers = {**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        with raw_request(ingestion.port, "/v1/events", headers) as connection:
            chunk = b"x" * 65536
            for _ in range(20 * 2**20 // len(chunk)):
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.sendall(b"0\r\n\r\n")
            assert read_status_line(connection).startswith(b"HTTP/1.1 413")
    assert ingestion.rss() - before < RSS_GROWTH_BOUND


def gzip_bomb(decompressed_bytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    zeros = b"\0" * 2**20
    parts = [packer.compress(zeros) for _ in range(decompressed_bytes // len(zeros))]
    return b"".join(parts) + packer.flush()


def test_gzip_bomb_is_refused_with_bounded_memory(ingestion: Ingestion) -> None:
    bomb = gzip_bomb(200 * 2**20)
    assert len(bomb) < BODY_LIMIT  # small on the wire: only decompression finds it out
    before = ingestion.rss()
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    for _ in range(3):
        response = requests.post(
            f"{ingestion.url}/v1/events", data=bomb, headers=headers, timeout=60
        )
        assert response.status_code == 413
    assert ingestion.rss() - before < RSS_GROWTH_BOUND
    assert ingestion.alive()


def test_slow_drip_body_times_out_while_others_are_served(ingestion: Ingestion) -> None:
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": "1000"}
    with raw_request(ingestion.port, "/v1/events", headers) as drip:
        drip.settimeout(0.5)
        answer = b""
        deadline = time.monotonic() + 60
        while not answer and time.monotonic() < deadline:
            try:
                drip.sendall(b" ")
                answer = drip.recv(65536)
            except TimeoutError:
                # meanwhile every other client is served
                assert requests.get(f"{ingestion.url}/healthz", timeout=10).status_code == 200
            except (BrokenPipeError, ConnectionResetError):
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        drip.settimeout(30)
        wait_closed(drip)
    assert ingestion.alive()


def test_client_hanging_up_mid_body_is_counted_and_not_an_error(ingestion: Ingestion) -> None:
    def hung_up() -> float:
        return metric(ingestion.url, "rtml_ingest_requests_rejected_total", status="499")

    before = hung_up()
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": "1000"}
    with raw_request(ingestion.port, "/v1/events", headers) as connection:
        connection.sendall(b'[{"type": "order_pl')
    deadline = time.monotonic() + 30
    while hung_up() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hung_up() == before + 1
    assert ingestion.alive()
