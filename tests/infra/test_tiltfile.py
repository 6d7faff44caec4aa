"""The Tiltfile, evaluated by a Starlark interpreter (starlark-pyo3) with stub
Tilt builtins that record what it asks for. Then: every path, image and
resource it names exists, every service is deployed with its health port
forwarded, and the start order is broker -> topic job -> services."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.infra import dockerfile, k8s
from tests.tools import import_or_missing

TRIGGER_MODE_AUTO = "TRIGGER_MODE_AUTO"
TRIGGER_MODE_MANUAL = "TRIGGER_MODE_MANUAL"
# What the Tiltfile may run on the developer's machine while loading (read-only).
ALLOWED_LOCAL = (re.compile(r"^git rev-parse HEAD\b"),)
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Recorded:
    docker_builds: list[dict] = field(default_factory=list)
    yaml_docs: list[dict] = field(default_factory=list)
    kustomized: list[str] = field(default_factory=list)
    k8s_resources: list[dict] = field(default_factory=list)
    local_resources: list[dict] = field(default_factory=list)
    local_commands: list[str] = field(default_factory=list)
    globals: dict = field(default_factory=dict)


def _evaluate(kubectl: str) -> Recorded:
    starlark = import_or_missing("starlark", "starlark-pyo3")
    rec = Recorded()

    # Stubs with Tilt's own parameter names: a misspelt keyword fails here as in Tilt.
    def docker_build(
        ref,
        context,
        build_args=None,
        dockerfile="Dockerfile",
        dockerfile_contents=None,
        live_update=None,
        match_in_env_vars=False,
        ignore=None,
        only=None,
        entrypoint=None,
        target=None,
        ssh=None,
        network=None,
        secret=None,
        extra_tag=None,
        container_args=None,
        cache_from=None,
        pull=False,
        platform=None,
        extra_hosts=None,
    ):
        rec.docker_builds.append(
            {
                "ref": ref,
                "context": context,
                "dockerfile": dockerfile,
                "only": only or [],
                "ignore": ignore or [],
                "live_update": live_update or [],
                "build_args": build_args or {},
                "target": target,
            }
        )

    def kustomize(pathToDir, kustomize_bin=None, flags=None):  # noqa: N803 (Tilt's name)
        rec.kustomized.append(pathToDir)
        return k8s.kustomize_build(kubectl, k8s.ROOT / pathToDir)

    def k8s_yaml(yaml_text, allow_duplicates=False):
        texts = yaml_text if isinstance(yaml_text, list) else [yaml_text]
        for text in texts:
            if not text.lstrip().startswith(("apiVersion", "---", "kind", "#")):  # a file path
                text = (k8s.ROOT / text).read_text()
            rec.yaml_docs.extend(d for d in yaml.safe_load_all(text) if d)

    def k8s_resource(
        workload="",
        new_name="",
        port_forwards=None,
        extra_pod_selectors=None,
        trigger_mode=TRIGGER_MODE_AUTO,
        resource_deps=None,
        objects=None,
        auto_init=True,
        pod_readiness="",
        links=None,
        labels=None,
        discovery_strategy="",
    ):
        forwards = port_forwards if isinstance(port_forwards, list) else [port_forwards]
        rec.k8s_resources.append(
            {
                "workload": workload,
                "new_name": new_name,
                "port_forwards": [f for f in forwards if f is not None],
                "resource_deps": resource_deps or [],
                "links": links or [],
                "labels": [labels] if isinstance(labels, str) else labels or [],
                "trigger_mode": trigger_mode,
                "auto_init": auto_init,
                "objects": objects or [],
            }
        )

    def local_resource(
        name,
        cmd="",
        deps=None,
        trigger_mode=TRIGGER_MODE_AUTO,
        resource_deps=None,
        ignore=None,
        auto_init=True,
        serve_cmd="",
        cmd_bat="",
        serve_cmd_bat="",
        allow_parallel=False,
        links=None,
        tags=None,
        env=None,
        serve_env=None,
        readiness_probe=None,
        dir="",
        serve_dir="",
        labels=None,
    ):
        rec.local_resources.append(
            {
                "name": name,
                "cmd": cmd,
                "serve_cmd": serve_cmd,
                "deps": deps or [],
                "trigger_mode": trigger_mode,
                "resource_deps": resource_deps or [],
                "auto_init": auto_init,
                "labels": [labels] if isinstance(labels, str) else labels or [],
            }
        )

    def port_forward(local_port, container_port=None, name=None, link_path=None, host=None):
        return {
            "tilt": "port_forward",
            "local": local_port,
            "container": container_port if container_port is not None else local_port,
            "name": name,
        }

    def link(url, name=None):
        return {"tilt": "link", "url": url, "name": name}

    def sync(local_path, remote_path):
        return {"tilt": "sync", "local": local_path, "remote": remote_path}

    def run(cmd, trigger=None, echo_off=False):
        return {"tilt": "run", "cmd": cmd, "trigger": trigger or []}

    def fall_back_on(files):
        return {"tilt": "fall_back_on", "files": [files] if isinstance(files, str) else files}

    def local(command, quiet=False, command_bat="", echo_off=False, env=None, dir="", stdin=None):
        rec.local_commands.append(command)
        return FAKE_COMMIT + "\n"

    def allow_k8s_contexts(contexts):
        pass

    def update_settings(**kwargs):
        pass

    module = starlark.Module()
    for fn in (
        docker_build,
        kustomize,
        k8s_yaml,
        k8s_resource,
        local_resource,
        port_forward,
        link,
        sync,
        run,
        fall_back_on,
        local,
        allow_k8s_contexts,
        update_settings,
    ):
        module.add_callable(fn.__name__, fn)
    module["TRIGGER_MODE_AUTO"] = TRIGGER_MODE_AUTO
    module["TRIGGER_MODE_MANUAL"] = TRIGGER_MODE_MANUAL

    # Tilt's Starlark (starlark-go): top-level for/if, def, lambda; no f-strings.
    dialect = starlark.Dialect.standard()
    dialect.enable_top_level_stmt = True
    dialect.enable_def = True
    dialect.enable_lambda = True
    dialect.enable_load = False  # a load() of an extension would need the network
    path = k8s.ROOT / "Tiltfile"
    ast = starlark.parse("Tiltfile", path.read_text(), dialect)
    lib = starlark.LibraryExtension
    starlark.eval(module, ast, starlark.Globals.extended_by([lib.Print, lib.StructType]))
    rec.globals["SERVICES"] = module["SERVICES"]
    return rec


@pytest.fixture(scope="module")
def tilt(kubectl) -> Recorded:
    return _evaluate(kubectl)


def _exists(relpath: str) -> bool:
    return (k8s.ROOT / relpath).exists()


def _resources(tilt: Recorded) -> dict[str, dict]:
    """Tilt's resources by name: one per workload (named after it), renamed by
    new_name, plus the local resources."""
    resources: dict[str, dict] = {}
    for name, workload in k8s.workloads(tilt.yaml_docs).items():
        resources[name] = {"workload": workload, "config": None}
    for call in tilt.k8s_resources:
        if call["workload"]:
            assert call["workload"] in resources, (
                f"k8s_resource({call['workload']!r}): no such workload"
            )
            entry = resources.pop(call["workload"])
            resources[call["new_name"] or call["workload"]] = {**entry, "config": call}
        else:
            assert call["new_name"] and call["objects"], "k8s_resource needs a workload or objects"
            resources[call["new_name"]] = {"workload": None, "config": call}
    for call in tilt.local_resources:
        assert call["name"] not in resources, f"two resources named {call['name']}"
        resources[call["name"]] = {"workload": None, "config": call, "local": True}
    return resources


def _runs(entry: dict, *command: str) -> bool:
    """Whether a resource's workload runs a command that starts with ``command``."""
    if entry["workload"] is None:
        return False
    argv = k8s.pod_spec(entry["workload"])["containers"][0].get("command", [])
    return tuple(argv[: len(command)]) == command


# ------------------------------------------------------------------- tests --


def test_paths_it_references_exist(tilt):
    assert tilt.kustomized == ["infra/k8s/overlays/dev"]
    for build in tilt.docker_builds:
        assert (k8s.ROOT / build["context"]).is_dir(), build["context"]
        assert _exists(build["dockerfile"]), build["dockerfile"]
        for path in build["only"]:
            assert _exists(path), f"docker_build only= names {path}, which does not exist"
        for step in build["live_update"]:
            for path in step.get("files", []) + ([step["local"]] if "local" in step else []):
                assert _exists(path), f"live_update names {path}, which does not exist"
    for call in tilt.local_resources:
        for path in call["deps"]:
            assert _exists(path), f"local_resource {call['name']} deps on {path}"
    for command in tilt.local_commands:
        assert any(p.match(command) for p in ALLOWED_LOCAL), f"local({command!r}) at load time"


def test_images_built_are_the_images_deployed(tilt):
    refs = {b["ref"] for b in tilt.docker_builds}
    used = set()
    for name, workload in k8s.workloads(tilt.yaml_docs).items():
        for container in k8s.containers(workload):
            image = container["image"]
            if image in refs:
                used.add(image)
            else:  # a third-party image: pinned to a version (MinIO's are dated releases)
                version = r":(v?\d[\w.-]*|RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z)$"
                assert re.search(version, image) or "@sha256:" in image, (
                    f"{name}: image {image} is neither built by docker_build nor pinned"
                )
    assert used == refs, f"docker_build images not deployed: {refs - used}"


def test_live_update_syncs_code_where_the_image_imports_it(tilt):
    args, stages = dockerfile.parse(k8s.ROOT / "Dockerfile")
    final = stages[-1]
    copied = {}
    for flags, sources, dest in final.copies():
        if "from" not in flags:
            for source in sources:
                copied[source.rstrip("/")] = dest if len(sources) == 1 else f"{dest}/{source}"
    (build,) = tilt.docker_builds
    steps = build["live_update"]
    kinds = [s["tilt"] for s in steps]
    assert kinds == sorted(kinds, key=["fall_back_on", "sync", "run"].index), (
        "Tilt needs fall_back_on steps first, then sync, then run"
    )
    synced = {s["local"].rstrip("/"): s["remote"] for s in steps if s["tilt"] == "sync"}
    assert {"services", "shared"} <= set(synced)
    for local, remote in synced.items():
        assert copied.get(local) == remote, (
            f"sync({local!r}, {remote!r}), but the image has {local} at {copied.get(local)}"
        )
        assert any(local == o or local.startswith(o.rstrip("/") + "/") for o in build["only"]), (
            f"{local} is synced but not in the build context (only=)"
        )
    env = " ".join(i.args for i in final.instructions if i.keyword == "ENV")
    assert "PYTHONPATH=/app" in env, "synced code under /app must come first on sys.path"
    for path in build["only"]:
        assert not dockerfile.dockerignore_excludes(k8s.ROOT / ".dockerignore", path), path
    assert "pyproject.toml" in next(s for s in steps if s["tilt"] == "fall_back_on")["files"]


def test_every_service_is_deployed_with_its_health_port_forwarded(tilt):
    services = {s["name"]: s["port"] for s in tilt.globals["SERVICES"]}
    assert set(services) == k8s.deployable_services(), (
        "the Tiltfile's SERVICES must list every service folder with a __main__.py"
    )
    resources = _resources(tilt)
    deployments = k8s.rtml_service_deployments(tilt.yaml_docs)
    assert set(deployments) == set(services)
    local_ports = []
    for name, port in services.items():
        assert name in resources and resources[name]["config"], f"no k8s_resource for {name}"
        config = resources[name]["config"]
        (container,) = k8s.pod_spec(deployments[name])["containers"]
        listens = k8s.resolve_port(container, "http")
        assert port == listens, f"SERVICES says {name} listens on {port}, its manifest {listens}"
        forwarded = {f["container"] for f in config["port_forwards"]}
        assert listens in forwarded, f"{name}: port {listens} is not forwarded"
        local_ports += [f["local"] for f in config["port_forwards"]]
        for url in (link["url"] for link in config["links"]):
            match = re.match(r"http://localhost:(\d+)/", url)
            assert match and int(match.group(1)) in {f["local"] for f in config["port_forwards"]}, (
                f"{name}: link {url} is not on one of its port-forwards"
            )
        assert config["labels"], f"{name} has no labels"
    assert len(local_ports) == len(set(local_ports)), (
        f"two port-forwards share a local port: {local_ports}"
    )


def test_every_resource_is_labelled_and_its_dependencies_exist(tilt):
    resources = _resources(tilt)
    for name, entry in resources.items():
        config = entry["config"]
        assert config is not None, f"workload {name} has no k8s_resource (labels, deps)"
        assert config["labels"], f"resource {name} has no labels"
        for dep in config["resource_deps"]:
            assert dep in resources, f"{name} depends on {dep}, which is no resource"

    def deps_of(name: str, seen: frozenset = frozenset()) -> set[str]:
        assert name not in seen, f"dependency cycle through {name}"
        out = set()
        for dep in resources[name]["config"]["resource_deps"]:
            out |= {dep} | deps_of(dep, seen | {name})
        return out

    def workload_named(kind: str, predicate) -> str:
        found = [
            n
            for n, e in resources.items()
            if e["workload"] is not None
            and e["workload"]["kind"] == kind
            and predicate(e["workload"])
        ]
        assert len(found) == 1, f"expected one {kind} resource, found {found}"
        return found[0]

    broker = workload_named("StatefulSet", lambda w: True)
    topics = workload_named(
        "Job", lambda w: k8s.pod_spec(w)["containers"][0]["command"] == ["rtml", "topics"]
    )
    assert broker in deps_of(topics), "the topic job must wait for the broker"
    job = resources[topics]["config"]
    assert job["auto_init"] and job["trigger_mode"] == TRIGGER_MODE_MANUAL, (
        "the topic job runs at start, then on demand (a finished Job cannot be live-updated)"
    )
    object_storage = workload_named("Deployment", lambda w: "minio" in w["metadata"]["name"])
    bucket = workload_named(
        "Job", lambda w: "mc mb" in " ".join(k8s.pod_spec(w)["containers"][0].get("args", []))
    )
    assert object_storage in deps_of(bucket), "the bucket job must wait for MinIO"
    for name in k8s.rtml_service_deployments(tilt.yaml_docs):
        assert topics in deps_of(name), f"{name} must start after the topic job"
        assert bucket in deps_of(name), f"{name} must start once its bucket exists"


def test_nothing_runs_on_the_host_but_tilt_and_kubectl(tilt):
    assert not tilt.local_resources, [r["name"] for r in tilt.local_resources]


def test_simulator_is_a_manual_job_against_the_ingestion_service(tilt):
    resources = _resources(tilt)
    (name,) = [n for n, e in resources.items() if _runs(e, "rtml", "simulate")]
    assert resources[name]["workload"]["kind"] == "Job"
    config = resources[name]["config"]
    assert config["trigger_mode"] == TRIGGER_MODE_MANUAL and config["auto_init"] is False
    assert "ingestion" in config["resource_deps"]
    (container,) = k8s.pod_spec(resources[name]["workload"])["containers"]
    assert container["image"] in {b["ref"] for b in tilt.docker_builds}, "the same image"
    command = container["command"]
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", command[command.index("--target") + 1])
    assert match, command
    service = k8s.by_kind(tilt.yaml_docs, "Service")[match.group(1)]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(match.group(2))]
    ingestion = resources["ingestion"]["workload"]
    assert k8s.selector_matches(service["spec"]["selector"], k8s.pod_template_labels(ingestion))
    (ingestion_container,) = k8s.pod_spec(ingestion)["containers"]
    assert k8s.resolve_port(ingestion_container, port["targetPort"]) == k8s.resolve_port(
        ingestion_container, "http"
    ), "the simulator's target must be ingestion's HTTP port"


def test_batch_cronjobs_are_resources_applied_at_start_and_on_demand(tilt):
    resources = _resources(tilt)
    cronjobs = {
        n: e for n, e in resources.items() if e["workload"] and e["workload"]["kind"] == "CronJob"
    }
    assert len(cronjobs) == 2, sorted(cronjobs)
    (topics,) = [n for n, e in resources.items() if _runs(e, "rtml", "topics")]
    for name, entry in cronjobs.items():
        config = entry["config"]
        # a CronJob has no running pod to live-update: an edit must not rebuild it each time
        assert config["auto_init"] and config["trigger_mode"] == TRIGGER_MODE_MANUAL, name
        assert topics in config["resource_deps"], f"{name} must start after the topic job"


def test_tiltfile_is_not_the_placeholder():
    text = Path(k8s.ROOT / "Tiltfile").read_text()
    assert "Placeholder" not in text
