"""k8s/ rendered with kustomize and validated offline (kubernetes-validate, strict, Kubernetes
1.30; ServiceMonitor and ScaledObject by validators generated from their CRD schemas), then checked
against the app: routes the probes and scrapes use, settings, CLI commands, security, and the
overlay's claims."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient

from app.config import Settings
from app.main import create_app
from tests.conftest import REDIS_URL
from tests.ops.commands import parse_command
from tests.ops.dockerfile import read_stages
from tests.ops.manifests import (
    CRD_KINDS,
    K8S,
    RENDERINGS,
    ROOT,
    TEST_SECRETS,
    Doc,
    Rendering,
    build,
    container,
    copy_k8s,
    crd_errors,
    kubernetes_validate,
    labels_match,
    pod_specs,
    render_all,
    settings_of,
)

SUPERVISOR = ("base", "production")
NAMESPACE = "sidekiq-supervisor"
APPLY_FIRST = "sidekiq-supervisor/apply-first"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
    return render_all(tmp_path_factory.mktemp("k8s"))


def wave(doc: Doc) -> int:
    return int(doc["metadata"].get("annotations", {}).get(SYNC_WAVE, "0"))


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_object_passes_kubernetes_validate_strict(
    renderings: dict[str, Rendering], name: str, tmp_path: Path
) -> None:
    rendering = renderings[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(rendering.text)
    done = kubernetes_validate(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout
    passed = {
        line.split(" resource ")[1].split()[0]
        for line in done.stdout.splitlines()
        if " passed " in line
    }
    core = [doc for doc in rendering.docs if doc["kind"] not in CRD_KINDS]
    assert passed == {f"{doc['kind'].lower()}/{doc['metadata']['name']}" for doc in core}
    # Only the custom resources lack a Kubernetes schema; the next test validates those.
    skipped = [line for line in done.stdout.splitlines() if line.startswith("WARN")]
    assert len(skipped) == len(rendering.docs) - len(core)
    assert all(any(f"kind {kind} " in line for kind in CRD_KINDS) for line in skipped)


@pytest.mark.parametrize("name", RENDERINGS)
def test_custom_resources_pass_their_crd_validators(
    renderings: dict[str, Rendering], name: str
) -> None:
    for doc in renderings[name].docs:
        if doc["kind"] in CRD_KINDS:
            assert crd_errors(doc) == [], doc["kind"]
    for scaled in renderings[name].all("ScaledObject"):  # the CRD's CEL rule, by hand
        assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_the_validators_refuse_mistakes(renderings: dict[str, Rendering], tmp_path: Path) -> None:
    """Controls, so the passes above mean something: a misspelt field fails the strict core
    validation; a field of the wrong type fails the CRD validation."""
    text = renderings["base"].text.replace("imagePullPolicy:", "imagePullPolicyy:", 1)
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    done = kubernetes_validate(path)
    assert done.returncode != 0
    assert "imagePullPolicyy" in done.stdout
    monitor = renderings["base"].one("ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    broken = {**monitor, "spec": {**monitor["spec"], "endpoints": [{**endpoint, "port": 8000}]}}
    assert any("endpoints/0/port must be string" in error for error in crd_errors(broken))


def test_production_refuses_to_render_without_the_operators_secrets(tmp_path: Path) -> None:
    root = copy_k8s(tmp_path)
    done = build(root / "overlays" / "production")
    assert done.returncode != 0
    assert "secrets.env" in done.stderr


@pytest.mark.parametrize("name", SUPERVISOR)
def test_every_configured_setting_is_a_real_one(
    renderings: dict[str, Rendering], name: str
) -> None:
    rendering = renderings[name]
    values = settings_of(rendering)
    fields = {f"SUPERVISOR_{field}" for field in Settings.model_fields}
    assert set(values) <= fields, set(values) - fields
    settings = Settings.model_validate(
        {k.removeprefix("SUPERVISOR_"): v for k, v in values.items()}
    )
    assert (settings.HOST, settings.PORT) == ("0.0.0.0", 8000)
    assert not settings.is_sqlite
    # Both workloads read exactly these two objects, by their generated (hashed) names.
    sources = {
        rendering.one("ConfigMap")["metadata"]["name"],
        rendering.one("Secret")["metadata"]["name"],
    }
    for workload in ("sidekiq-supervisor", "sidekiq-supervisor-migrate"):
        refs = container(rendering, workload)["envFrom"]
        assert {(ref.get("configMapRef") or ref["secretRef"])["name"] for ref in refs} == sources
    readiness = container(rendering, "sidekiq-supervisor")["readinessProbe"]
    # /readyz answers 503 naming the dependency after its own timeouts; the probe waits longer.
    assert readiness["timeoutSeconds"] > max(
        settings.DB_TIMEOUT_SECONDS, settings.REDIS_TIMEOUT_SECONDS
    )


def test_production_runs_with_credentials(renderings: dict[str, Rendering]) -> None:
    values = settings_of(renderings["production"])
    settings = Settings.model_validate(
        {k.removeprefix("SUPERVISOR_"): v for k, v in values.items()}
    )
    assert settings.has_credentials
    assert settings.open_endpoints() == []
    assert values == {**values, **TEST_SECRETS}


async def test_probe_and_scrape_paths_are_served_without_credentials(
    renderings: dict[str, Rendering], mysql_url: str
) -> None:
    """kubelet and Prometheus send no token: the paths must answer 200 on a production config."""
    rendering = renderings["production"]
    values = {k.removeprefix("SUPERVISOR_"): v for k, v in settings_of(rendering).items()}
    values |= {"DATABASE_URL": mysql_url, "REDIS_URL": REDIS_URL, "SAMPLER_ENABLED": "false"}
    server = container(rendering, "sidekiq-supervisor")
    probes = [
        server[probe]["httpGet"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    ]
    annotations = rendering.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    endpoint = rendering.one("ServiceMonitor")["spec"]["endpoints"][0]
    assert [probe["path"] for probe in probes] == ["/healthz", "/healthz", "/readyz"]
    assert annotations["prometheus.io/path"] == endpoint["path"] == "/prometheus/metrics"
    application = create_app(Settings.model_validate(values))
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://pod") as http:
            answers = {
                path: await http.get(path)
                for path in [p["path"] for p in probes] + [endpoint["path"]]
            }
            guarded = await http.get("/api/v1/stats")
    assert {path: answer.status_code for path, answer in answers.items()} == dict.fromkeys(
        answers, 200
    )
    assert "supervisor_database_up 1.0" in answers[endpoint["path"]].text
    assert guarded.status_code == 401  # the credentials are really on


@pytest.mark.parametrize("name", SUPERVISOR)
def test_ports_agree_from_the_container_to_the_scrapers(
    renderings: dict[str, Rendering], name: str
) -> None:
    rendering = renderings[name]
    server = container(rendering, "sidekiq-supervisor")
    (port,) = server["ports"]
    assert (port["name"], port["containerPort"]) == (
        "http",
        int(settings_of(rendering)["SUPERVISOR_PORT"]),
    )
    assert {
        server[p]["httpGet"]["port"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
    } == {"http"}
    annotations = rendering.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    (service_port,) = rendering.one("Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    assert rendering.one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == service_port["name"]
    policy_ports = rendering.one("NetworkPolicy")["spec"]["ingress"][0]["ports"]
    assert policy_ports == [{"port": port["containerPort"], "protocol": "TCP"}]


@pytest.mark.parametrize("name", SUPERVISOR)
def test_commands_are_real_cli_commands(renderings: dict[str, Rendering], name: str) -> None:
    rendering = renderings[name]
    assert parse_command(container(rendering, "sidekiq-supervisor")["command"])[0] == "serve"
    assert parse_command(container(rendering, "sidekiq-supervisor-migrate")["command"]) == (
        "migrate",
        {"revision": "head"},
    )


def test_the_migration_job_creates_the_schema(
    renderings: dict[str, Rendering], tmp_path: Path
) -> None:
    """The Job's command, run as the pod would (its environment, the image's PATH), on a fresh
    embedded database instead of MySQL."""
    rendering = renderings["production"]
    database = tmp_path / "fresh.db"
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
        **settings_of(rendering),
        "SUPERVISOR_DATABASE_URL": f"sqlite:///{database}",
    }
    command = container(rendering, "sidekiq-supervisor-migrate")["command"]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "job_events", "sidekiq_samples", "queue_samples"} <= tables


@pytest.mark.parametrize("name", SUPERVISOR)
def test_pods_are_locked_down(renderings: dict[str, Rendering], name: str) -> None:
    """The "restricted" Pod Security Standard and more: non-root as the image's own uid,
    read-only root filesystem with an emptyDir /tmp, no capabilities, no service account token."""
    user = read_stages()[-1].last("USER").arguments
    for workload, spec in pod_specs(renderings[name]):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, workload
        assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == user
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["volumes"] == [
            {"name": "tmp", "emptyDir": {"sizeLimit": spec["volumes"][0]["emptyDir"]["sizeLimit"]}}
        ]
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert box["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
            assert set(box["resources"]) == {"requests", "limits"}
            assert (
                set(box["resources"]["requests"])
                == set(box["resources"]["limits"])
                == {"cpu", "memory"}
            )


@pytest.mark.parametrize("name", SUPERVISOR)
def test_the_server_pods_are_served_scaled_and_protected(
    renderings: dict[str, Rendering], name: str
) -> None:
    rendering = renderings[name]
    deployment = rendering.one("Deployment")
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    job_pods = rendering.one("Job")["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    service = rendering.one("Service")
    assert labels_match(service["spec"]["selector"], pods)
    assert not labels_match(service["spec"]["selector"], job_pods)  # never route to the Job
    assert labels_match(
        rendering.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pods
    )
    assert rendering.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    monitor = rendering.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert labels_match(monitor, service["metadata"]["labels"])
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert labels_match(spread["labelSelector"]["matchLabels"], pods)
    hpa = rendering.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == 2
    (metric,) = hpa["spec"]["metrics"]
    assert (metric["type"], metric["resource"]["name"]) == ("Resource", "cpu")


@pytest.mark.parametrize("name", SUPERVISOR)
def test_the_network_policy_admits_the_clients_and_reaches_the_stores(
    renderings: dict[str, Rendering], name: str
) -> None:
    rendering = renderings[name]
    policy = rendering.one("NetworkPolicy")["spec"]
    for workload in ("Deployment", "Job"):  # the Job needs MySQL and DNS too
        labels = rendering.one(workload)["spec"]["template"]["metadata"]["labels"]
        assert labels_match(policy["podSelector"]["matchLabels"], labels)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["ingress"]
    peers = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    worker = renderings["worker"].one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert any(labels_match(peer, worker) for peer in peers), "the Sidekiq pods are let in"
    assert {"app.kubernetes.io/name": "prometheus"} in peers
    assert {"app.kubernetes.io/name": "ingress-nginx"} in peers
    out = {
        (port["port"], port["protocol"]) for egress in policy["egress"] for port in egress["ports"]
    }
    assert out == {(3306, "TCP"), (6379, "TCP"), (53, "UDP"), (53, "TCP")}


def test_the_migration_is_applied_before_the_deployment(renderings: dict[str, Rendering]) -> None:
    """`kubectl apply -l sidekiq-supervisor/apply-first=true` creates the Job and all it needs;
    Argo CD's sync waves give the same order."""
    rendering = renderings["production"]
    first = [
        doc
        for doc in rendering.docs
        if doc["metadata"].get("labels", {}).get(APPLY_FIRST) == "true"
    ]
    kinds = ["ConfigMap", "Job", "Namespace", "Secret", "ServiceAccount"]
    assert sorted(doc["kind"] for doc in first) == kinds
    job = rendering.one("Job")
    pod = job["spec"]["template"]["spec"]
    needed = {("ServiceAccount", pod["serviceAccountName"])} | {
        ("ConfigMap", ref["configMapRef"]["name"])
        if "configMapRef" in ref
        else ("Secret", ref["secretRef"]["name"])
        for ref in pod["containers"][0]["envFrom"]
    }
    assert needed <= {(doc["kind"], doc["metadata"]["name"]) for doc in first}
    rest = [doc for doc in rendering.docs if doc not in first]
    assert (
        max(wave(doc) for doc in first if doc is not job)
        < wave(job)
        < min(wave(doc) for doc in rest)
    )


def quantity(value: str) -> float:
    """A Kubernetes quantity as a number: "250m" CPU, "256Mi" memory."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def test_production_has_its_namespace_image_and_secret(renderings: dict[str, Rendering]) -> None:
    """What the overlay's header claims, checked against the base it changes (1/2)."""
    base, production = renderings["base"], renderings["production"]
    namespace = production.one("Namespace")["metadata"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {
        doc["metadata"].get("namespace") for doc in production.docs if doc["kind"] != "Namespace"
    } == {namespace["name"]}
    assert namespace["name"] == NAMESPACE
    assert all("namespace" not in doc["metadata"] for doc in base.docs)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {
        name: {c["image"] for _, s in pod_specs(r) for c in s["containers"]}
        for name, r in renderings.items()
        if name in SUPERVISOR
    }
    assert images == {
        "base": {f"sidekiq-supervisor:{version}"},
        "production": {f"registry.example.com/platform/sidekiq-supervisor:{version}"},
    }
    assert any("CHANGE-ME" in value for value in settings_of(base).values())
    assert not any("CHANGE-ME" in value for value in settings_of(production).values())


def test_production_has_its_settings_sizes_and_scrape_label(
    renderings: dict[str, Rendering],
) -> None:
    """What the overlay's header claims, checked against the base it changes (2/2)."""
    base, production = renderings["base"], renderings["production"]
    claimed = dict(
        line.split("=", 1)
        for line in (K8S / "overlays" / "production" / "settings.env").read_text().split()
    )
    config = base.one("ConfigMap")["data"]
    assert claimed
    assert all(config[key] != value for key, value in claimed.items())
    assert production.one("ConfigMap")["data"] == {**config, **claimed}
    sizes = [container(r, "sidekiq-supervisor")["resources"] for r in (base, production)]
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert quantity(sizes[1][kind][resource]) > quantity(sizes[0][kind][resource])
    assert (
        production.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"]
        == 10
        > base.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    )
    assert (
        production.one("ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    )
    assert "release" not in base.one("ServiceMonitor")["metadata"]["labels"]


def test_every_name_the_kit_uses_exists() -> None:
    """Settings named anywhere in k8s/ or the Dockerfile are real, and so are the Ruby
    middleware's variables the worker sets."""
    files = [path for path in K8S.rglob("*") if path.is_file()] + [ROOT / "Dockerfile"]
    text = "\n".join(path.read_text() for path in files)
    # SUPERVISOR_URL is the worker's own variable for its preStop hook, not a setting.
    used = set(re.findall(r"\bSUPERVISOR_([A-Z_]+)", text)) - {"URL"}
    assert used, "the kit names settings"
    assert used <= set(Settings.model_fields), used - set(Settings.model_fields)
    ruby = (ROOT / "clients" / "ruby" / "sidekiq_supervisor.rb").read_text()
    client = set(re.findall(r"\bSIDEKIQ_SUPERVISOR_[A-Z_]+", text))
    assert {"SIDEKIQ_SUPERVISOR_URL", "SIDEKIQ_SUPERVISOR_TOKEN"} <= client
    assert {name for name in client if name not in ruby} == set()
