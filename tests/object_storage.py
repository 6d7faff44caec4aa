"""Real storage servers for the tests, on 127.0.0.1: an S3 API (moto's standalone
server) and an MLflow tracking server with a SQLite backend, each a child process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rtml.shared.embedded_broker import free_port
from rtml.shared.object_storage import StorageSettings, s3_client

from tests.helpers import wait_http

BUCKET = "rtml-test"
# moto accepts any key; the values only have to be present
S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # no instance-metadata lookups for credentials or region (slow time-outs off EC2)
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs to reach this server (credentials, endpoint)."""
        return {**S3_ENVIRONMENT, "RTML_S3_ENDPOINT_URL": self.endpoint_url}

    def new_prefix(self, name: str = "t") -> str:
        """A fresh ``s3://`` location no other test writes to."""
        return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:12]}"

    def client(self):  # noqa: ANN201 (a boto3 client has no importable type)
        return s3_client(StorageSettings(s3_endpoint_url=self.endpoint_url))


@contextmanager
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **S3_ENVIRONMENT},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server = S3Server(f"http://127.0.0.1:{port}")
        wait_http(f"{server.endpoint_url}/moto-api/", timeout_s=60)
        with _environment(server.environment):
            server.client().create_bucket(Bucket=BUCKET)
            yield server
    finally:
        _stop(process)


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str


@contextmanager
def mlflow_server(workdir: Path) -> Iterator[MlflowServer]:
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    port = free_port()
    log = open(workdir / "mlflow-server.log", "wb")  # closed once the server has stopped
    process = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
         "--artifacts-destination", str(workdir / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", timeout_s=180)
        yield MlflowServer(uri)
    finally:
        # the server runs its workers in children: stop the whole group it leads
        _stop(process, group=True)
        log.close()


def _stop(process: subprocess.Popen, group: bool = False) -> None:
    if process.poll() is not None:
        return
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
