"""End to end: the service samples a real Redis, a real Prometheus scrapes it with the rules of
alerts/, and a real Alertmanager with alerts/alertmanager.yaml posts to a Slack stub. A queue
whose oldest job is too old pages #sidekiq-pager naming the queue; emptying it resolves it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from app.sidekiq.keys import Keys
from tests.live import LiveSupervisor, log_tail, run_supervisor
from tests.ops.alert_rules import ALERTMANAGER, ALERTS, RULES, load_yaml
from tests.ops.prometheus_run import Server, run_alertmanager, run_prometheus
from tests.ops.slack_stub import SlackPost, SlackStub, run_slack_stub
from tests.sidekiq.layouts import V7, process, push

pytestmark = pytest.mark.slow

QUEUE = "billing"
ALERT = "SidekiqQueueLatencyHigh"
SCRAPE_JOB = "sidekiq-supervisor"  # the job name the rules' `up{job=...}` selectors expect
DEADLINE_SECONDS = 30.0  # per step; each takes a few seconds
POLL_SECONDS = 0.1
NO_POST = "no Slack post {what} within {seconds:g} s; posts so far: {posts}"


@dataclass(frozen=True, slots=True)
class Stack:
    """Everything the alert passes through, for polling and for the failure report."""

    supervisor: LiveSupervisor
    prometheus: Server
    alertmanager: Server
    stub: SlackStub

    def check_alive(self) -> None:
        self.supervisor.check_alive()
        self.prometheus.check_alive()
        self.alertmanager.check_alive()

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Any failed assertion inside comes with what each part saw."""
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from exc

    def report(self) -> str:
        """What each part saw: the alerts Prometheus and Alertmanager hold, and the log tails."""
        parts = []
        for server, path in (
            (self.prometheus, "/api/v1/alerts"),
            (self.alertmanager, "/api/v2/alerts"),
        ):
            try:
                parts.append(f"{server.name} {path}: {httpx.get(server.url + path).text[:2000]}")
            except httpx.HTTPError as exc:
                parts.append(f"{server.name} {path}: {exc!r}")
        parts.append(f"--- supervisor log tail ---\n{log_tail(self.supervisor.log)}")
        parts.extend([self.prometheus.tail(), self.alertmanager.tail()])
        return "\n".join(parts)


def rules_firing_at_once(tmp_path: Path) -> Path:
    """alerts/sidekiq.rules.yaml with every `for:` shortened to 0s, so an alert fires on the
    first evaluation that sees its condition: seconds instead of minutes. The durations
    themselves are checked by the promtool unit tests (alerts/tests/)."""
    rules = load_yaml(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    path = tmp_path / "sidekiq.rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def prometheus_config(tmp_path: Path, rules: Path, supervisor: str, alertmanager: str) -> Path:
    """Scrape the supervisor and evaluate the rules every second; alerts go to `alertmanager`."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "metrics_path": "/prometheus/metrics",
                "static_configs": [{"targets": [supervisor.removeprefix("http://")]}],
            }
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(tmp_path: Path, stub_url: str) -> Path:
    """alerts/alertmanager.yaml with its templates found where they are, each receiver's
    webhook file holding the stub's URL plus the receiver's name (so a post says which
    receiver sent it), and group waits of a second (the real ones are 10 s to 1 min)."""
    config = load_yaml(ALERTMANAGER)
    config["templates"] = [str(ALERTS / pattern) for pattern in config["templates"]]
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
    for receiver in config["receivers"]:
        url_file = tmp_path / f"{receiver['name']}-url"
        url_file.write_text(f"{stub_url}/{receiver['name']}")
        for slack in receiver["slack_configs"]:
            slack["api_url_file"] = str(url_file)
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def write_old_queue(redis: Redis) -> None:
    """A queue whose oldest job was pushed long before the 300 s threshold (layouts' clock is
    fixed in 2025), and a live process serving it: SidekiqNoWorkers would hold the latency
    alert back (an inhibition of alerts/alertmanager.yaml)."""
    keys = Keys()
    await push(redis, keys, V7, QUEUE, 600.0)
    identity = await process(
        redis, keys, V7, hostname="worker-1", concurrency=5, queues=[QUEUE], beat=time.time()
    )
    await redis.expire(keys.process(identity), 600)  # outlive the test, not just Sidekiq's 60 s


def attachment(post: SlackPost) -> dict[str, Any]:
    """The first attachment of an Alertmanager Slack post (where its title and text go)."""
    attachments = post.body.get("attachments") or [{}]
    first: dict[str, Any] = attachments[0]
    return first


def is_message(post: SlackPost, status: str) -> bool:
    title = str(attachment(post).get("title", ""))
    return title.startswith(f"[{status}") and ALERT in title and f"queue {QUEUE}" in title


async def wait_for_post(stack: Stack, match: Callable[[SlackPost], bool], what: str) -> SlackPost:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        stack.check_alive()
        found = [post for post in stack.stub.posts() if match(post)]
        if found:
            return found[0]
        await asyncio.sleep(POLL_SECONDS)
    posts = json.dumps([[post.path, post.body] for post in stack.stub.posts()])[:3000]
    raise AssertionError(NO_POST.format(what=what, seconds=DEADLINE_SECONDS, posts=posts))


async def test_an_old_queue_pages_slack_naming_the_queue_and_resolves(
    mysql_url: str, redis: Redis, tmp_path: Path
) -> None:
    await write_old_queue(redis)
    sampler = {"SUPERVISOR_SAMPLER_ENABLED": "true", "SUPERVISOR_SAMPLE_INTERVAL_SECONDS": "1"}
    for name in ("prometheus", "alertmanager"):
        (tmp_path / name).mkdir()
    with (
        run_slack_stub() as stub,
        run_supervisor(mysql_url, tmp_path, extra_env=sampler) as supervisor,
        run_alertmanager(
            alertmanager_config(tmp_path, stub.url), tmp_path / "alertmanager", tmp_path
        ) as alertmanager,
        run_prometheus(
            prometheus_config(
                tmp_path, rules_firing_at_once(tmp_path), supervisor.url, alertmanager.address
            ),
            tmp_path / "prometheus",
            tmp_path,
        ) as prometheus,
    ):
        stack = Stack(supervisor, prometheus, alertmanager, stub)
        with stack.reporting():
            await see_the_page_and_its_resolution(stack, redis)


async def see_the_page_and_its_resolution(stack: Stack, redis: Redis) -> None:
    """The page arrives while the queue is old; its resolve message once the queue is gone."""
    firing = await wait_for_post(
        stack, lambda post: is_message(post, "FIRING"), f"firing {ALERT} for {QUEUE}"
    )
    assert_paged(firing)
    await redis.delete(Keys().queue(QUEUE))
    await redis.srem(Keys().queues, QUEUE)
    resolved = await wait_for_post(
        stack, lambda post: is_message(post, "RESOLVED"), f"resolving {ALERT} for {QUEUE}"
    )
    assert resolved.path == "/slack-critical"
    assert attachment(resolved)["color"] == "good"
    assert "*RESOLVED*" in attachment(resolved)["text"]


def assert_paged(post: SlackPost) -> None:
    """The critical receiver posted it, to the pager channel, naming the queue and the runbook."""
    assert post.path == "/slack-critical"
    assert post.body["channel"] == "#sidekiq-pager"
    message = attachment(post)
    assert message["color"] == "danger"
    assert message["title_link"].endswith("alerts/README.md#sidekiqqueuelatencyhigh")
    text = message["text"]
    assert f"Sidekiq queue {QUEUE} has high latency" in text  # the summary, rendered
    assert f"Queue {QUEUE} has jobs waiting for " in text  # the description, with its value
    assert f"*Queue:* `{QUEUE}`" in text
    assert "|SidekiqQueueLatencyHigh in alerts/README.md>" in text


def labelled(alertname: str, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager's API, with the rule's severity."""
    severity = {
        rule["alert"]: rule["labels"]["severity"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
    }[alertname]
    return {
        "labels": {"alertname": alertname, "severity": severity, **labels},
        "annotations": {"summary": f"{alertname} (test)"},
    }


def key(labels: dict[str, str]) -> str:
    where = labels.get("queue") or labels.get("instance") or ""
    return f"{labels['alertname']} {where}".strip()


async def wait_for_states(
    client: httpx.AsyncClient, alertmanager: Server, expected: dict[str, str]
) -> None:
    """Poll Alertmanager's view of its alerts until each is active or suppressed as expected
    (its inhibitor learns of new source alerts asynchronously)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        response = await client.get("/api/v2/alerts")
        response.raise_for_status()
        states = {key(alert["labels"]): alert["status"]["state"] for alert in response.json()}
        if states == expected:
            return
        await asyncio.sleep(POLL_SECONDS)
    assert states == expected, alertmanager.tail()


async def test_alertmanager_holds_back_symptoms_of_a_known_cause(tmp_path: Path) -> None:
    (tmp_path / "alertmanager").mkdir()
    first = [
        labelled(ALERT, queue=QUEUE, name=QUEUE),
        labelled("SidekiqQueueBacklog", queue=QUEUE, name=QUEUE),
        labelled("SidekiqQueueBacklog", queue="mailers", name="mailers"),
        labelled("SupervisorLedgerWritesFailing", instance="a:8000", job=SCRAPE_JOB),
        labelled("SupervisorEventsRejected", instance="a:8000", reason="database_down"),
        labelled("SupervisorEventsRejected", instance="b:8000", reason="queue_full"),
    ]
    cause = labelled("SupervisorRedisUnreachable", job=SCRAPE_JOB)
    with (
        run_slack_stub() as stub,
        run_alertmanager(
            alertmanager_config(tmp_path, stub.url), tmp_path / "alertmanager", tmp_path
        ) as alertmanager,
    ):
        async with httpx.AsyncClient(base_url=alertmanager.url, timeout=2.0) as client:
            (await client.post("/api/v2/alerts", json=first)).raise_for_status()
            # A latency page holds back its own queue's backlog only; a ledger outage its
            # replica's rejected events only.
            expected = {
                f"{ALERT} {QUEUE}": "active",
                f"SidekiqQueueBacklog {QUEUE}": "suppressed",
                "SidekiqQueueBacklog mailers": "active",
                "SupervisorLedgerWritesFailing a:8000": "active",
                "SupervisorEventsRejected a:8000": "suppressed",
                "SupervisorEventsRejected b:8000": "active",
            }
            await wait_for_states(client, alertmanager, expected)
            # Redis unreachable: every Sidekiq alert is held back, the supervisor's others not.
            (await client.post("/api/v2/alerts", json=[cause])).raise_for_status()
            expected |= {
                f"{ALERT} {QUEUE}": "suppressed",
                "SidekiqQueueBacklog mailers": "suppressed",
                "SupervisorRedisUnreachable": "active",
            }
            await wait_for_states(client, alertmanager, expected)
