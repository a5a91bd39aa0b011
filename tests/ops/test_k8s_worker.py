"""The example Sidekiq worker (k8s/examples/sidekiq-worker): its autoscaling on queue latency
(HPA through prometheus-adapter, or KEDA) on a metric we really export, its grace period, and its
preStop hook run for real against a live supervisor and Sidekiq's Redis layout."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from app.exporter.collector import SidekiqCollector
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from tests.live import refused_url, run_supervisor
from tests.ops.manifests import K8S, Rendering, render_all
from tests.sidekiq.layouts import NOW, V7, Held, process, push

KEYS = Keys()
ADMIN_TOKEN = "admin-token-for-the-drain"
PRESTOP_DEADLINE_SECONDS = 20.0


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
    return render_all(tmp_path_factory.mktemp("k8s"))


async def test_the_worker_scales_on_a_metric_the_supervisor_exports(
    renderings: dict[str, Rendering], redis: Redis
) -> None:
    """The HPA (prometheus-adapter) and the KEDA ScaledObject ask for the same series, with the
    same bounds and pace; and that series exists: our collector renders it from Sidekiq's Redis."""
    plain, keda = renderings["worker"], renderings["worker-keda"]
    assert [len(plain.all("HorizontalPodAutoscaler")), len(plain.all("ScaledObject"))] == [1, 0]
    assert [len(keda.all("HorizontalPodAutoscaler")), len(keda.all("ScaledObject"))] == [0, 1]
    assert plain.one("Deployment") == keda.one("Deployment")
    hpa, scaled = plain.one("HorizontalPodAutoscaler")["spec"], keda.one("ScaledObject")["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sidekiq-worker"}
    assert hpa["scaleTargetRef"] == scaled["scaleTargetRef"] == target
    (metric,) = hpa["metrics"]
    external = metric["external"]
    ((label, queue),) = external["metric"]["selector"]["matchLabels"].items()
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (
        scaled["minReplicaCount"],
        scaled["maxReplicaCount"],
    )
    assert hpa["behavior"] == scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    (trigger,) = scaled["triggers"]
    assert (trigger["type"], trigger["metricType"], external["target"]["type"]) == (
        "prometheus",
        "Value",
        "Value",
    )
    assert float(trigger["metadata"]["threshold"]) == float(external["target"]["value"])
    name = external["metric"]["name"]
    assert trigger["metadata"]["query"] == f'max({name}{{{label}="{queue}"}})'
    promtool_check([trigger["metadata"]["query"]])
    await push(redis, KEYS, V7, queue, 45.0)
    snapshot = await read_snapshot(redis, KEYS, clock=lambda: NOW)
    collector = SidekiqCollector(Held(snapshot), max_age_seconds=60, clock=lambda: NOW)
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value(name, {label: queue}) == 45.0


def test_the_adapter_rule_in_the_readme_serves_that_metric(
    renderings: dict[str, Rendering],
) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (K8S / "README.md").read_text(), re.DOTALL)
    (rules,) = [
        yaml.safe_load(block)["rules"]["external"] for block in blocks if "external:" in block
    ]
    (rule,) = rules
    external = renderings["worker"].one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["external"]
    name = external["metric"]["name"]
    ((label, queue),) = external["metric"]["selector"]["matchLabels"].items()
    assert rule["name"]["as"] == name
    assert re.fullmatch(rule["name"]["matches"], name)
    assert rule["seriesQuery"] == f'{name}{{{label}!=""}}'
    assert rule["resources"] == {"namespaced": False}  # the series carry the supervisor's namespace
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", name)
        .replace("<<.LabelMatchers>>", f'{label}="{queue}"')
    )
    assert query == f'max({name}{{{label}="{queue}"}}) by ({label})'
    promtool_check([query, rule["seriesQuery"]])


def promtool_check(expressions: list[str]) -> None:
    """Each expression parses as PromQL (promtool check rules on recording rules of them)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    rules = [
        {"record": f"check:expression_{n}", "expr": expr} for n, expr in enumerate(expressions)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump({"groups": [{"name": "k8s", "rules": rules}]}, file)
        file.flush()
        done = subprocess.run(
            [promtool, "check", "rules", file.name], capture_output=True, text=True
        )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_worker_grace_period_covers_its_drain(renderings: dict[str, Rendering]) -> None:
    worker = renderings["worker"].one("Deployment")["spec"]["template"]
    (sidekiq,) = worker["spec"]["containers"]
    env = {var["name"]: var for var in sidekiq["env"]}
    drain = int(env["DRAIN_TIMEOUT_SECONDS"]["value"])
    shutdown = int(sidekiq["command"][sidekiq["command"].index("-t") + 1])
    assert worker["spec"]["terminationGracePeriodSeconds"] >= drain + shutdown + 10
    shell, flag, script = sidekiq["lifecycle"]["preStop"]["exec"]["command"]
    assert (shell, flag) == ("sh", "-c")
    assert '"$SUPERVISOR_URL/api/v1/drain?host=$(hostname)"' in script
    assert set(re.findall(r"\$\{?([A-Z_]+)", script)) <= set(env)
    # The URLs name the production Service, where its NetworkPolicy lets these pods in.
    service = renderings["production"].one("Service")
    assert service["spec"]["ports"][0]["port"] == 80
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert env["SUPERVISOR_URL"]["value"] == env["SIDEKIQ_SUPERVISOR_URL"]["value"] == url
    secrets = {
        var["valueFrom"]["secretKeyRef"]["name"] for var in env.values() if "valueFrom" in var
    }
    assert secrets == {"sidekiq-supervisor-client"}
    assert "create secret generic sidekiq-supervisor-client" in (K8S / "README.md").read_text()


def prestop(
    rendering: Rendering, bin_dir: Path, host: str, overrides: dict[str, str]
) -> subprocess.Popen[str]:
    """The worker's preStop command as the kubelet runs it: `sh -c` with the container's plain
    environment, where `hostname` prints the pod's (here: `host`)."""
    if shutil.which("curl") is None:
        pytest.fail("curl is missing (the preStop hook runs it): apt-get install curl")
    (sidekiq,) = rendering.one("Deployment")["spec"]["template"]["spec"]["containers"]
    plain = {var["name"]: var["value"] for var in sidekiq["env"] if "value" in var}
    fake = bin_dir / "hostname"
    fake.write_text(f"#!/bin/sh\necho {host}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **plain, **overrides}
    command = sidekiq["lifecycle"]["preStop"]["exec"]["command"]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def wait_for(condition: Callable[[], Awaitable[bool]], hook: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + PRESTOP_DEADLINE_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            hook.kill()
            stalled = f"the preStop hook: no progress in {PRESTOP_DEADLINE_SECONDS} s"
            pytest.fail(f"{stalled}: {hook.communicate()}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_the_prestop_hook_waits_for_the_running_job_then_lets_the_pod_stop(
    renderings: dict[str, Rendering], mysql_url: str, redis: Redis, tmp_path: Path
) -> None:
    host = "sidekiq-worker-5d8c7b9f4-x2k8p"
    busy = await process(
        redis, KEYS, V7, hostname=host, concurrency=5, queues=["default"],
        busy=[("b" * 24, "default", NOW)],
    )  # fmt: skip
    other = await process(
        redis, KEYS, V7, hostname="sidekiq-worker-5d8c7b9f4-zz9q1", concurrency=5,
        queues=["default"],
    )  # fmt: skip
    with run_supervisor(mysql_url, tmp_path, admin_token=ADMIN_TOKEN) as live:
        overrides = {"SUPERVISOR_URL": live.url, "SUPERVISOR_ADMIN_TOKEN": ADMIN_TOKEN}
        hook = prestop(renderings["worker"], tmp_path, host, overrides)
        try:
            # Each round that finds the process loud quiets it again: a second TSTP proves the
            # hook looped instead of letting the pod stop.
            await wait_for(lambda: llen_at_least(redis, KEYS.signals(busy), 2), hook)
            assert hook.poll() is None
            assert set(await redis.lrange(KEYS.signals(busy), 0, -1)) == {b"TSTP"}
            # Sidekiq's next heartbeat: quiet, and the job is done.
            await redis.hset(KEYS.process(busy), mapping={"quiet": "true", "busy": 0})
            await redis.delete(KEYS.work(busy))
            await wait_for(lambda: exited(hook), hook)
        finally:
            if hook.poll() is None:
                hook.kill()
        out, err = hook.communicate()
    assert hook.returncode == 0, err
    assert orjson.loads(out) | {"host": host, "drained": True} == orjson.loads(out)
    assert await redis.exists(KEYS.signals(other)) == 0  # another pod's Sidekiq keeps working


@pytest.mark.slow
async def test_the_prestop_hook_gives_up_at_its_deadline(
    renderings: dict[str, Rendering], tmp_path: Path
) -> None:
    """A supervisor that stays down must not hold the pod past its grace period: at the
    deadline the hook fails and Sidekiq's own shutdown takes over."""
    overrides = {
        "SUPERVISOR_URL": refused_url(),
        "SUPERVISOR_ADMIN_TOKEN": ADMIN_TOKEN,
        "DRAIN_TIMEOUT_SECONDS": "0",
    }
    hook = prestop(renderings["worker"], tmp_path, "sidekiq-worker-1", overrides)
    await wait_for(lambda: exited(hook), hook)
    _, err = hook.communicate()
    assert hook.returncode == 1
    assert "sidekiq-worker-1 not drained in 0s" in err


async def llen_at_least(redis: Redis, key: str, count: int) -> bool:
    return int(await redis.llen(key)) >= count


async def exited(hook: subprocess.Popen[str]) -> bool:
    return hook.poll() is not None
