"""Offline checks of infra/k8s: every overlay renders with kustomize, every object
validates against the Kubernetes schemas, and the manifests agree with the code
(services, modules, ports, settings, topics command). No cluster needed."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.infra import k8s
from tests.tools import import_or_missing

TARGETS = list(k8s.render_targets())
PROD_TARGETS = [target for target in TARGETS if k8s.is_prod(target)]


def settings_of(objects: list[dict]):
    """The Settings every rtml pod of a rendering gets from its ConfigMap."""
    from rtml.shared.settings import Settings

    data = k8s.config_data(objects)
    return Settings.model_validate({k.removeprefix("RTML_").lower(): v for k, v in data.items()})


# ------------------------------------------------------ render and validate --


@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_validates_against_kubernetes_schemas(rendered, target):
    kubernetes_validate = import_or_missing("kubernetes_validate", "kubernetes-validate")
    objects = rendered[target]
    assert objects, f"{target} rendered nothing"
    bundled = kubernetes_validate.utils.all_versions()  # sorted: "1.25.0" ... "1.37.0"
    floor = tuple(int(x) for x in k8s.MIN_KUBERNETES.split(".")[:2])
    supported = [v for v in bundled if tuple(int(x) for x in v.split(".")[:2]) >= floor]
    assert supported, f"kubernetes-validate bundles no schema >= {k8s.MIN_KUBERNETES}"
    versions = sorted({supported[0], supported[-1]})
    errors = []
    custom = k8s.crd_schemas()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in custom:
            continue  # test_custom_resources_validate_against_their_crds
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                errors.append(
                    f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}) "
                    f"at {path or '/'}: {exc.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects in {target}"


def test_base_renders(kubectl):
    objects = [d for d in yaml.safe_load_all(k8s.kustomize_build(kubectl, k8s.BASE)) if d]
    assert k8s.rtml_service_deployments(objects)


# ------------------------------------------- services <-> Deployments, both ways --


def test_every_service_has_a_base_manifest_listed_in_the_kustomization():
    listed = k8s.base_resources()
    for name in sorted(k8s.deployable_services() - k8s.REQUEST_WIRING):
        assert (k8s.BASE / f"{name}.yaml").is_file(), (
            f"services/{name} has a __main__.py but no infra/k8s/base/{name}.yaml "
            "(docs/DEPLOY.md 'Adding a service'; or list it in NOT_DEPLOYMENTS with the reason)"
        )
        assert f"{name}.yaml" in listed, (
            f"infra/k8s/base/kustomization.yaml does not list {name}.yaml"
        )
    component = k8s.COMPONENTS / k8s.REQUEST_WIRING_COMPONENT
    listed = yaml.safe_load((component / "kustomization.yaml").read_text())["resources"]
    for name in sorted(k8s.REQUEST_WIRING):
        assert f"{name}.yaml" in listed and (component / f"{name}.yaml").is_file(), name


def test_exclusions_are_real_folders_and_documented(root):
    deploy_doc = (root / "docs" / "DEPLOY.md").read_text()
    for name in k8s.NOT_DEPLOYMENTS:
        assert (k8s.SERVICES_DIR / name).is_dir(), f"NOT_DEPLOYMENTS names services/{name}, gone"
        assert f"services/{name}" in deploy_doc, f"docs/DEPLOY.md does not explain services/{name}"


@pytest.mark.parametrize("target", TARGETS)
def test_services_and_deployments_match_both_ways(rendered, target):
    deployments = k8s.rtml_service_deployments(rendered[target])
    expected = k8s.services_deployed_by(target)
    assert "ingestion" in expected
    missing = expected - set(deployments)
    assert not missing, f"{target}: no Deployment for services {sorted(missing)}"
    unexpected = set(deployments) - expected
    assert not unexpected, f"{target}: {sorted(unexpected)} deployed without their component"
    for name, deployment in deployments.items():
        (container,) = k8s.pod_spec(deployment)["containers"]
        module = k8s.container_module(container)
        assert module == f"rtml.services.{name}", (
            f"{target}: Deployment {name} runs {module!r}, expected rtml.services.{name}"
        )
        assert k8s.module_exists(module), (
            f"{target}: Deployment {name} runs {module}, which has no __main__.py"
        )
        assert name not in k8s.NOT_DEPLOYMENTS, f"{target}: {name} is excluded yet deployed"
        labels = k8s.pod_template_labels(deployment)
        assert labels.get("app.kubernetes.io/name") == name
        assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


@pytest.mark.parametrize("target", TARGETS)
def test_every_rtml_container_runs_the_rtml_image(rendered, target):
    image = "rtml" if target == "dev" else None
    for name, workload in k8s.workloads(rendered[target]).items():
        if workload["metadata"]["labels"].get("app.kubernetes.io/part-of") != "rtml":
            continue
        for container in k8s.containers(workload):
            if image:
                assert container["image"] == image, f"{name}: image {container['image']}"
            else:  # prod: a registry image with an explicit, non-latest tag
                ref = container["image"]
                assert "/" in ref and re.search(r":[\w.-]+$", ref.split("/")[-1]), ref
                assert not ref.endswith(":latest"), ref


# ----------------------------------------------------------- ports and probes --


def _read_by_code(env_name: str, service: str) -> bool:
    """Does the code read this RTML_* variable? (a setting, or named in the source)"""
    from rtml.shared.settings import Settings

    field = env_name.removeprefix("RTML_").lower()
    if field in Settings.model_fields:
        return True
    sources = [*(k8s.SERVICES_DIR / service).rglob("*.py"), *(k8s.ROOT / "shared").glob("*.py")]
    return any(env_name in p.read_text() or field in p.read_text() for p in sources)


def _service_port(container: dict, name: str) -> tuple[str, int]:
    env = k8s.env_values(container)
    port_envs = [k for k in env if k8s.PORT_ENV.match(k) and k not in k8s.NON_HTTP_PORT_ENVS]
    assert len(port_envs) == 1, (
        f"Deployment {name} must set exactly one RTML_*_PORT (its HTTP side port), has {port_envs}"
    )
    (port_env,) = port_envs
    return port_env, int(env[port_env])


@pytest.mark.parametrize("target", TARGETS)
def test_probes_ports_and_scrape_annotations_use_the_port_the_service_listens_on(rendered, target):
    from rtml.stack import SERVICES as REGISTRY

    for name, deployment in k8s.rtml_service_deployments(rendered[target]).items():
        (container,) = k8s.pod_spec(deployment)["containers"]
        port_env, port = _service_port(container, name)
        assert _read_by_code(port_env, name), f"{name}: no code reads {port_env}"
        for spec in REGISTRY:  # `rtml up` knows the same service by the same variable
            if spec.module == f"rtml.services.{name}":
                assert spec.port_env == port_env, f"{name}: rtml/stack.py says {spec.port_env}"
        # the HTTP server must bind beyond loopback, or the kubelet cannot reach it
        host_env = port_env.removesuffix("_PORT") + "_HOST"
        if _read_by_code(host_env, name):
            assert k8s.env_values(container).get(host_env) == "0.0.0.0", (
                f"{name}: set {host_env}=0.0.0.0 (the default 127.0.0.1 is unreachable)"
            )

        declared = {p["containerPort"] for p in container.get("ports", [])}
        assert port in declared, f"{name}: {port_env}={port} but containerPorts are {declared}"
        assert k8s.resolve_port(container, "http") == port, f"{name}: port 'http' != {port}"
        expected = {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe_name, path in expected.items():
            probe = container.get(probe_name)
            assert probe, f"{name}: no {probe_name}"
            http = probe.get("httpGet")
            assert http and http["path"] == path, f"{name}: {probe_name} must GET {path}"
            assert k8s.resolve_port(container, http["port"]) == port, (
                f"{name}: {probe_name} probes port {http['port']}, the service listens on {port}"
            )
        annotations = k8s.pod_annotations(deployment)
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        assert annotations.get("prometheus.io/port") == str(port), name


@pytest.mark.parametrize("target", TARGETS)
def test_services_select_pods_and_target_declared_ports(rendered, target):
    objects = rendered[target]
    workloads = k8s.workloads(objects)
    services = k8s.by_kind(objects, "Service")
    for frontend in k8s.HTTP_FRONTENDS & set(k8s.rtml_service_deployments(objects)):
        assert frontend in services, f"{target}: {frontend} takes traffic but has no Service"
    for name, service in services.items():
        selected = [
            w
            for w in workloads.values()
            if k8s.selector_matches(service["spec"].get("selector", {}), k8s.pod_template_labels(w))
        ]
        assert len(selected) == 1, f"{target}: Service {name} selects {len(selected)} workloads"
        (container, *_) = k8s.pod_spec(selected[0])["containers"]
        for port in service["spec"]["ports"]:
            k8s.resolve_port(container, port.get("targetPort", port["port"]))


# ------------------------------------------------------ config and references --


@pytest.mark.parametrize("target", TARGETS)
def test_every_reference_resolves(rendered, target):
    objects = rendered[target]
    present = {(o["kind"], o["metadata"]["name"]) for o in objects} | k8s.EXTERNAL[target]
    for name, workload in k8s.workloads(objects).items():
        spec = k8s.pod_spec(workload)
        refs = []
        for container in k8s.containers(workload):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    refs.append(("ConfigMap", source["configMapRef"]))
                if "secretRef" in source:
                    refs.append(("Secret", source["secretRef"]))
            volumes = {v["name"] for v in spec.get("volumes", [])}
            claims = {
                t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
            }
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes | claims, (
                    f"{name}: mount of unknown volume {mount['name']}"
                )
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                refs.append(
                    (
                        "PersistentVolumeClaim",
                        {"name": volume["persistentVolumeClaim"]["claimName"]},
                    )
                )
            if "secret" in volume:
                refs.append(
                    ("Secret", {"name": volume["secret"]["secretName"], **volume["secret"]})
                )
            if "configMap" in volume:
                refs.append(("ConfigMap", volume["configMap"]))
        for kind, ref in refs:
            if not ref.get("optional"):
                assert (kind, ref["name"]) in present, (
                    f"{target}: {name} needs {kind} {ref['name']}"
                )


@pytest.mark.parametrize("target", TARGETS)
def test_config_keys_are_settings_the_code_reads(rendered, target):
    from rtml.shared.object_storage import StorageSettings
    from rtml.shared.settings import Settings

    fields = Settings.model_fields | StorageSettings.model_fields
    data = k8s.config_data(rendered[target])
    sources = "\n".join(
        p.read_text() for d in ("shared", "services", "rtml") for p in (k8s.ROOT / d).rglob("*.py")
    )
    for key in data:
        field = key.removeprefix("RTML_").lower()
        assert key.startswith("RTML_") and (field in fields or key in sources), (
            f"{target}: ConfigMap key {key} is read by no code (a typo?)"
        )
    assert data.get("RTML_KAFKA_BOOTSTRAP"), f"{target}: RTML_KAFKA_BOOTSTRAP is not set"
    Settings.model_validate({k.removeprefix("RTML_").lower(): v for k, v in data.items()})


def test_dev_bootstrap_is_the_redpanda_statefulset(rendered):
    objects = rendered["dev"]
    (sts,) = k8s.by_kind(objects, "StatefulSet").values()
    host, port = k8s.config_data(objects)["RTML_KAFKA_BOOTSTRAP"].split(":")
    assert host == f"{sts['metadata']['name']}-0.{sts['spec']['serviceName']}"
    assert sts["spec"]["serviceName"] in k8s.by_kind(objects, "Service")
    (container,) = k8s.pod_spec(sts)["containers"]
    assert k8s.resolve_port(container, "kafka") == int(port)
    assert f"--advertise-kafka-addr=internal://{host}:{port}" in container["args"]
    assert sts["spec"]["volumeClaimTemplates"], "the dev broker keeps its data on a PVC"


def test_prod_uses_sasl_and_documents_its_secret(rendered, root):
    data = k8s.config_data(rendered["prod"])
    assert data["RTML_KAFKA_SECURITY_PROTOCOL"] in {"SASL_SSL", "SASL_PLAINTEXT"}
    assert data.get("RTML_KAFKA_SASL_MECHANISM")
    assert "redpanda" not in {
        w["metadata"]["name"] for w in k8s.workloads(rendered["prod"]).values()
    }
    example = (root / "infra/k8s/overlays/prod/secrets.env.example").read_text()
    keys = ("RTML_INGEST_TOKEN", "RTML_KAFKA_SASL_USERNAME", "RTML_KAFKA_SASL_PASSWORD")
    for key in (*keys, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert re.search(rf"^{key}=", example, re.M), f"secrets.env.example lacks {key}"


# ------------------------------------------------------ resources and scaling --


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_limits_and_runs_unprivileged(rendered, target):
    for name, workload in k8s.workloads(rendered[target]).items():
        pod_security = k8s.pod_spec(workload).get("securityContext", {})
        for container in k8s.containers(workload):
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request and limit, f"{target}: {name} needs {resource} request and limit"
                assert k8s.quantity(request) <= k8s.quantity(limit), f"{target}: {name} {resource}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, f"{target}: {name} may run as root"
            assert security.get("allowPrivilegeEscalation") is False, name


@pytest.mark.parametrize("target", PROD_TARGETS)
def test_prod_replicas_stay_within_partitions_with_disruption_budgets(rendered, target):
    objects = rendered[target]
    partitions = int(k8s.config_data(objects)["RTML_PARTITIONS"])
    budgets = k8s.by_kind(objects, "PodDisruptionBudget")
    deployments = k8s.rtml_service_deployments(objects)
    for name in k8s.SCALED_IN_PROD & set(deployments):
        assert deployments[name]["spec"].get("replicas", 1) > 1, f"prod should scale {name} out"
    for name, deployment in deployments.items():
        replicas = deployment["spec"].get("replicas", 1)
        if name not in k8s.NOT_PARTITION_BOUND:
            assert replicas <= partitions, (
                f"{name}: {replicas} replicas but {partitions} partitions: the extra ones idle"
            )
        labels = k8s.pod_template_labels(deployment)
        covering = [
            b
            for b in budgets.values()
            if k8s.selector_matches(b["spec"]["selector"]["matchLabels"], labels)
        ]
        if replicas > 1:
            assert len(covering) == 1, f"{name} has {replicas} replicas and {len(covering)} PDBs"
            spec = covering[0]["spec"]
            if "minAvailable" in spec:
                assert int(spec["minAvailable"]) < replicas, f"{name}: the PDB would block drains"
    for name, budget in budgets.items():
        matched = [
            w
            for w in k8s.workloads(objects).values()
            if k8s.selector_matches(
                budget["spec"]["selector"]["matchLabels"], k8s.pod_template_labels(w)
            )
        ]
        assert matched, f"PodDisruptionBudget {name} selects no workload"


@pytest.mark.parametrize("target", TARGETS)
def test_model_store_and_warehouse_are_object_storage_without_shared_volumes(rendered, target):
    from rtml.shared.object_storage import parse_location

    objects = rendered[target]
    data = k8s.config_data(objects)
    for key in ("RTML_MODEL_STORE", "RTML_WAREHOUSE"):
        assert parse_location(data[key]).scheme == "s3", f"{target}: {key} is {data[key]}"
    # every node reaches a bucket: no ReadWriteMany volume, and prod no volume of its own
    for name, claim in k8s.by_kind(objects, "PersistentVolumeClaim").items():
        assert "ReadWriteMany" not in claim["spec"]["accessModes"], f"{target}: {name}"
        assert not target.startswith("prod"), f"{target}: PersistentVolumeClaim {name}"


def test_dev_object_storage_is_the_minio_in_the_cluster_with_its_bucket(rendered):
    from urllib.parse import urlsplit

    from rtml.shared.object_storage import parse_location

    objects = rendered["dev"]
    data = k8s.config_data(objects)
    endpoint = urlsplit(data["RTML_S3_ENDPOINT_URL"])
    service = k8s.by_kind(objects, "Service")[endpoint.hostname]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == endpoint.port]
    (minio,) = [
        w for w in k8s.workloads(objects).values()
        if k8s.selector_matches(service["spec"]["selector"], k8s.pod_template_labels(w))
    ]  # fmt: skip
    (container,) = k8s.pod_spec(minio)["containers"]
    k8s.resolve_port(container, port["targetPort"])
    # MinIO's root user is the key pair the services sign with (in the Secret they read)
    (secret,) = [n for n in k8s.by_kind(objects, "Secret") if n.startswith("rtml-secrets")]
    root = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {k: (r["name"], r["key"]) for k, r in root.items()} == {
        "MINIO_ROOT_USER": (secret, "AWS_ACCESS_KEY_ID"),
        "MINIO_ROOT_PASSWORD": (secret, "AWS_SECRET_ACCESS_KEY"),
    }
    buckets = {parse_location(data[k]).bucket for k in ("RTML_MODEL_STORE", "RTML_WAREHOUSE")}
    (job,) = [
        j for j in k8s.by_kind(objects, "Job").values()
        if "mc mb" in " ".join(k8s.pod_spec(j)["containers"][0].get("args", []))
    ]  # fmt: skip
    script = " ".join(k8s.pod_spec(job)["containers"][0]["args"])
    assert all(f"dev/{bucket}" in script for bucket in buckets), script
    assert f"{endpoint.scheme}://{endpoint.netloc}" in script


# ----------------------------------------------------------- jobs and dev mode --


@pytest.mark.parametrize("target", TARGETS)
def test_topic_job_runs_the_rtml_topics_command(rendered, target):
    import tomllib

    from rtml.cli import main as cli

    jobs = k8s.by_kind(rendered[target], "Job")
    assert "rtml-topics" in jobs, f"{target}: no topic-creation Job"
    (container,) = k8s.pod_spec(jobs["rtml-topics"])["containers"]
    program, command = container["command"]
    scripts = tomllib.loads((k8s.ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert program in scripts and command in cli.commands, container["command"]


def test_dev_runs_services_under_the_reloader(rendered, root):
    for name, deployment in k8s.rtml_service_deployments(rendered["dev"]).items():
        (container,) = k8s.pod_spec(deployment)["containers"]
        reloader = "/app/infra/docker/devreload.py"
        assert container["command"] == ["python", reloader, "-m", f"rtml.services.{name}"]
    assert (root / "infra/docker/devreload.py").is_file()
    for target in TARGETS:
        if target != "dev":
            for deployment in k8s.rtml_service_deployments(rendered[target]).values():
                assert "devreload" not in " ".join(
                    k8s.pod_spec(deployment)["containers"][0]["command"]
                )


# ------------------------------------------------------------------ hardening --


@pytest.mark.parametrize("target", TARGETS)
def test_pods_mount_no_api_token_and_rtml_runs_as_its_own_account(rendered, target):
    objects = rendered[target]
    accounts = k8s.by_kind(objects, "ServiceAccount")
    for name, workload in k8s.workloads(objects).items():
        spec = k8s.pod_spec(workload)
        assert spec.get("automountServiceAccountToken") is False, f"{target}: {name} mounts a token"
        if k8s.is_rtml(workload):
            account = spec.get("serviceAccountName")
            assert account in accounts, f"{target}: {name} runs as {account!r}, not an rtml account"
            assert accounts[account].get("automountServiceAccountToken") is False, account


@pytest.mark.parametrize("target", TARGETS)
def test_root_filesystems_are_read_only_with_a_writable_tmp(rendered, target):
    for name, workload in k8s.workloads(rendered[target]).items():
        if not k8s.is_rtml(workload):
            continue
        # dev services only: Tilt's live_update writes the synced code into /app
        live_updated = (
            target == "dev" and workload in k8s.rtml_service_deployments(rendered[target]).values()
        )
        for container in k8s.containers(workload):
            read_only = container.get("securityContext", {}).get("readOnlyRootFilesystem")
            assert read_only is (not live_updated), f"{target}: {name} readOnlyRootFilesystem"
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in k8s.pod_spec(workload)["volumes"]}
            # the temp dir: faust's data directory, the doorbell's socket, libraries' caches
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{target}: {name} has no writable /tmp"


@pytest.mark.parametrize("target", PROD_TARGETS)
def test_replicated_workers_spread_over_nodes_and_zones(rendered, target):
    for name, deployment in k8s.rtml_service_deployments(rendered[target]).items():
        if deployment["spec"].get("replicas", 1) < 2:
            continue
        constraints = k8s.pod_spec(deployment).get("topologySpreadConstraints", [])
        keys = {c["topologyKey"] for c in constraints}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, (
            f"{target}: {name} has {deployment['spec']['replicas']} replicas spread by {keys}"
        )
        labels = k8s.pod_template_labels(deployment)
        for constraint in constraints:
            own = {key: labels.get(key) for key in constraint.get("matchLabelKeys", [])}
            own.pop("pod-template-hash", None)  # set by the ReplicaSet, not in the template
            selector = {**constraint["labelSelector"]["matchLabels"], **own}
            assert selector.get("app.kubernetes.io/name") == name and k8s.selector_matches(
                selector, labels
            ), f"{target}: {name} spreads {selector}, not its own pods"
            assert constraint["maxSkew"] == 1, name


@pytest.mark.parametrize("target", PROD_TARGETS)
def test_prod_topics_are_replicated_for_a_three_broker_cluster(rendered, target):
    settings = settings_of(rendered[target])
    assert settings.replication_factor >= 3, "one lost broker must lose no data"
    insync = settings.min_insync_replicas
    assert insync is not None and 2 <= insync < settings.replication_factor, (
        "acks=all writes must need 2 replicas and survive one broker down"
    )


@pytest.mark.parametrize("target", TARGETS)
def test_no_gateway_beside_replicated_features_workers(rendered, target):
    deployments = k8s.rtml_service_deployments(rendered[target])
    if "gateway" in deployments:
        replicas = deployments["features"]["spec"].get("replicas", 1)
        assert replicas == 1, (
            f"{target}: the gateway's /v1/enrich lookups cannot reach the other "
            f"{replicas - 1} features workers (components/request-wiring)"
        )


@pytest.mark.parametrize("target", TARGETS)
def test_batch_jobs_run_rtml_batch_commands_on_a_schedule(rendered, target):
    import tomllib

    from rtml.cli import main as cli

    scripts = tomllib.loads((k8s.ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = []
    for name, cronjob in k8s.by_kind(rendered[target], "CronJob").items():
        assert len(cronjob["spec"]["schedule"].split()) == 5, f"{name}: not a cron schedule"
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", f"{name}: runs may overlap"
        (container,) = k8s.pod_spec(cronjob)["containers"]
        program, group, command, *args = container["command"]
        assert program in scripts, container["command"]
        # the arguments parse as the command's own (click raises on an unknown one)
        cli.commands[group].commands[command].make_context(command, list(args))  # type: ignore[attr-defined]
        commands.append((group, command))
    assert sorted(commands) == [("batch", "features"), ("batch", "predict")], commands


# ---------------------------------------------------------------- Strimzi --


def test_custom_resources_validate_against_their_crds(rendered):
    import_or_missing("jsonschema", "kubernetes-validate")
    validated, errors = 0, []
    for target, objects in rendered.items():
        for obj in objects:
            if (obj["apiVersion"], obj["kind"]) in k8s.crd_schemas():
                errors += [f"{target}: {e}" for e in k8s.validate_custom_resource(obj)]
                validated += 1
    assert validated, "no custom resource was rendered"
    assert not errors, "\n".join(errors)


def test_crd_validation_refuses_a_misspelt_field(rendered):
    import_or_missing("jsonschema", "kubernetes-validate")
    (kafka,) = k8s.by_kind(rendered["prod-strimzi"], "Kafka").values()
    listener = {**kafka["spec"]["kafka"]["listeners"][0], "tsl": True}
    typo = {**kafka, "spec": {**kafka["spec"], "kafka": {**kafka["spec"]["kafka"],
                                                          "listeners": [listener]}}}  # fmt: skip
    assert any("'tsl' was unexpected" in e for e in k8s.validate_custom_resource(typo))


def test_strimzi_topics_are_the_registry_replicated_as_configured(rendered):
    from rtml.shared import topics

    objects = rendered["prod-strimzi"]
    settings = settings_of(objects)
    (kafka,) = k8s.by_kind(objects, "Kafka")  # its name
    declared = k8s.by_kind(objects, "KafkaTopic")
    assert set(declared) == {topic.name for topic in topics.ALL}
    for topic in topics.ALL:
        resource = declared[topic.name]
        assert resource["metadata"]["labels"]["strimzi.io/cluster"] == kafka, topic.name
        spec = resource["spec"]
        assert spec["partitions"] == topics.partitions_of(topic, settings.partitions), topic.name
        assert spec["replicas"] == settings.replication_factor, topic.name
        config = {key: str(value) for key, value in spec.get("config", {}).items()}
        assert config == topics.configs_of(topic, settings.min_insync_replicas), topic.name


def test_strimzi_kafka_serves_what_the_services_connect_with(rendered):
    objects = rendered["prod-strimzi"]
    data, settings = k8s.config_data(objects), settings_of(objects)
    ((name, kafka),) = k8s.by_kind(objects, "Kafka").items()
    host, port = settings.kafka_bootstrap.split(":")
    assert host == f"{name}-kafka-bootstrap", "the operator's bootstrap Service"
    (listener,) = [x for x in kafka["spec"]["kafka"]["listeners"] if x["port"] == int(port)]
    assert listener["type"] == "internal" and listener["tls"] is True
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    config = kafka["spec"]["kafka"]["config"]
    assert config["min.insync.replicas"] == settings.min_insync_replicas
    assert config["default.replication.factor"] == settings.replication_factor
    brokers = sum(
        pool["spec"]["replicas"]
        for pool in k8s.by_kind(objects, "KafkaNodePool").values()
        if pool["metadata"]["labels"]["strimzi.io/cluster"] == name
        and "broker" in pool["spec"]["roles"]
    )
    assert brokers >= settings.replication_factor

    # TLS: every rtml pod trusts the operator's cluster CA, where the setting says
    ca_dir, ca_file = data["RTML_KAFKA_SSL_CAFILE"].rsplit("/", 1)
    assert ca_file == "ca.crt"
    for workload_name, workload in k8s.workloads(objects).items():
        if not k8s.is_rtml(workload):
            continue
        volumes = {v["name"]: v for v in k8s.pod_spec(workload)["volumes"]}
        for container in k8s.containers(workload):
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == ca_dir)
            secret = volumes[mount["name"]]["secret"]["secretName"]
            assert secret == f"{name}-cluster-ca-cert", f"{workload_name} trusts {secret}"

    # SCRAM: the user the services name, its password the key every pod reads
    (user,) = k8s.by_kind(objects, "KafkaUser").values()
    assert user["metadata"]["name"] == settings.kafka_sasl_username
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == name
    reference = user["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "rtml-secrets", "key": "RTML_KAFKA_SASL_PASSWORD"}
    prefixes = [
        acl["resource"]["name"]
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "topic" and acl["resource"]["patternType"] == "prefix"
    ]
    declared = k8s.by_kind(objects, "KafkaTopic")
    assert prefixes and all(topic.startswith(tuple(prefixes)) for topic in declared)
