"""The alerting kit (alerts/): promtool and amtool accept it; every alert is unit-tested firing
and quiet, labelled, annotated, documented, and reads only series the service exports; routes,
inhibitions and Slack templates do what alerts/README.md says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from starlette.applications import Starlette
from starlette.routing import Match
from typer.core import TyperGroup

from app.api import ingest
from app.cli.main import cli
from app.config import Settings
from app.main import create_app
from tests.conftest import make_settings
from tests.ops.alert_rules import (
    ALERTMANAGER,
    ALERTS,
    RULES,
    RUNBOOKS,
    TARGET_LABELS,
    UNIT_TESTS,
    Rule,
    exported_series,
    github_anchors,
    load_rules,
    load_yaml,
    selectors,
    unit_test_cases,
)
from tests.ops.prometheus_run import run_tool

RULE_LIST = load_rules()
ALERT_NAMES = [rule.alert for rule in RULE_LIST]
# The recommended alerts and their severities: the names must not change.
RECOMMENDED_ALERTS = {
    "SidekiqQueueLatencyHigh": "critical",
    "SidekiqDeadJobsIncreasing": "critical",
    "SidekiqNoWorkers": "critical",
    "SidekiqQueueBacklog": "warning",
    "SidekiqHighFailureRate": "warning",
    "SidekiqWorkerQuiet": "warning",
    "SidekiqSlowJobs": "warning",
    "SidekiqRetryQueueNotEmpty": "info",
}
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_PREFIX = "https://github.com/your-org/sidekiq-supervisor/blob/main/alerts/README.md#"
RECEIVERS = {"critical": "slack-critical", "warning": "slack-warning", "info": "slack-info"}
TEMPLATE_GLOB = str(ALERTS / "templates" / "*.tmpl")


def _rule(alert: str) -> Rule:
    return next(rule for rule in RULE_LIST if rule.alert == alert)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.stdout}\n{result.stderr}"


def test_promtool_accepts_the_rules() -> None:
    result = run_tool("promtool", "check", "rules", str(RULES))
    assert result.returncode == 0, _output(result)
    assert f"SUCCESS: {len(RULE_LIST)} rules found" in result.stdout
    assert len(set(ALERT_NAMES)) == len(ALERT_NAMES), "an alert name is used twice"


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no unit tests in alerts/tests/"
    result = run_tool("promtool", "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, _output(result)
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path, case in unit_test_cases():
        assert case["alertname"] in ALERT_NAMES, f"{path.name}: unknown alert {case['alertname']}"
        (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for path in UNIT_TESTS:
        files = [(path.parent / name).resolve() for name in load_yaml(path)["rule_files"]]
        assert files == [RULES], f"{path.name} tests {files}, not {RULES}"
    assert set(ALERT_NAMES) - firing == set(), "alerts no unit test sees firing"
    assert set(ALERT_NAMES) - quiet == set(), "alerts no unit test sees staying quiet"


@pytest.mark.parametrize("alert", [rule.alert for rule in RULE_LIST if rule.duration])
def test_unit_tests_catch_an_alert_that_fires_too_soon(alert: str, tmp_path: Path) -> None:
    """With its `for:` removed, the alert fires in a case that expects it quiet."""
    rules = load_yaml(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["for"] = "0s"
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copytree(ALERTS / "tests", tmp_path / "tests")
    tests = [str(tmp_path / "tests" / path.name) for path in UNIT_TESTS]
    result = run_tool("promtool", "test", "rules", *tests)
    assert result.returncode != 0
    assert f"alertname: {alert}," in _output(result)


def test_recommended_alerts_keep_their_names_and_severities() -> None:
    kept = {rule.alert: rule.labels.get("severity") for rule in RULE_LIST}
    assert {name: kept.get(name) for name in RECOMMENDED_ALERTS} == RECOMMENDED_ALERTS


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_is_labelled_annotated_and_has_a_runbook(alert: str) -> None:
    rule = _rule(alert)
    assert rule.labels.get("severity") in SEVERITIES
    assert {"summary", "description", "runbook_url"} <= set(rule.annotations)
    assert rule.annotations["runbook_url"] == RUNBOOK_PREFIX + alert.lower()
    assert alert.lower() in github_anchors(RUNBOOKS.read_text()), "no runbook section"
    labels = selectors(rule.expr)[1]
    if "queue" in labels or '"queue"' in rule.expr:  # the alert carries a queue label
        text = rule.annotations["summary"] + rule.annotations["description"]
        assert "{{ $labels.queue }}" in text, "the queue is not named in the message"


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_expression_reads_series_the_service_exports(alert: str) -> None:
    exported = exported_series()
    names, labels = selectors(_rule(alert).expr)
    assert names, "no metric found in the expression"
    assert names - set(exported) == set(), "not exported by app/metrics"
    known = set(TARGET_LABELS).union(*(exported[name] for name in names))
    assert labels - known == set(), f"labels not on {sorted(names)}"


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run_tool("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, _output(result)
    assert "SUCCESS" in result.stdout
    config = load_yaml(ALERTMANAGER)
    # amtool accepts a template glob that matches nothing and a template that is never defined.
    matched = [path for pattern in config["templates"] for path in ALERTS.glob(pattern)]
    assert matched, f"{config['templates']} match no file next to {ALERTMANAGER.name}"
    defined = set(re.findall(r'define "([^"]+)"', "".join(p.read_text() for p in matched)))
    used = set(re.findall(r'template "([^"]+)"', ALERTMANAGER.read_text()))
    assert used, "the Slack messages use no template"
    assert used - defined == set(), "templates used but never defined"


def test_slack_receivers_read_their_webhook_from_a_file_and_send_resolved() -> None:
    config = load_yaml(ALERTMANAGER)
    assert "api_url:" not in ALERTMANAGER.read_text(), "a webhook URL is inline"
    assert config["route"]["group_by"] == ["alertname", "queue"]
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert set(receivers) == set(RECEIVERS.values())
    files = set()
    for receiver in receivers.values():
        (slack,) = receiver["slack_configs"]
        assert slack["send_resolved"] is True
        assert slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
        assert slack["channel"].startswith("#")
        files.add(slack["api_url_file"])
    assert len(files) == len(receivers), "two channels share a webhook"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["severity=critical", "alertname=SidekiqQueueLatencyHigh", "queue=billing"],
            "slack-critical",
        ),
        (["severity=warning", "alertname=SidekiqQueueBacklog", "queue=billing"], "slack-warning"),
        (["severity=info", "alertname=SidekiqRetryQueueNotEmpty"], "slack-info"),
        (["alertname=SomethingElse"], "slack-warning"),
    ],
)
def test_amtool_routes_each_severity_to_its_channel(labels: list[str], receiver: str) -> None:
    result = run_tool(
        "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}", *labels,
    )  # fmt: skip
    assert result.returncode == 0, _output(result)
    assert result.stdout.strip() == receiver


def _group(status: str, rule: Rule, labels: dict[str, str]) -> dict[str, Any]:
    """Alertmanager's template data for a group of one alert, as its Slack notifier gets it."""
    all_labels = {"alertname": rule.alert, **rule.labels, **labels}
    annotations = {
        "summary": "Sidekiq queue billing has high latency",
        "description": "Queue billing has jobs waiting for 6m 40s (threshold 5m).",
        "runbook_url": rule.annotations["runbook_url"],
    }
    alert = {
        "status": status, "labels": all_labels, "annotations": annotations,
        "startsAt": "2026-03-02T12:00:00Z", "endsAt": "2026-03-02T12:30:00Z",
        "generatorURL": "http://prometheus:9090/graph", "fingerprint": "0123456789abcdef",
    }  # fmt: skip
    return {
        "receiver": "slack-critical", "status": status, "alerts": [alert],
        "groupLabels": {"alertname": rule.alert, "queue": labels["queue"]},
        "commonLabels": all_labels, "commonAnnotations": annotations,
        "externalURL": "http://alertmanager:9093",
    }  # fmt: skip


def _render(data: Path, name: str) -> str:
    result = run_tool(
        "amtool", "template", "render", f"--template.glob={TEMPLATE_GLOB}",
        f"--template.data={data}", f'--template.text={{{{ template "{name}" . }}}}',
    )  # fmt: skip
    assert result.returncode == 0, _output(result)
    return result.stdout


@pytest.mark.parametrize(("status", "title", "color"), [
    ("firing", "[FIRING:1] SidekiqQueueLatencyHigh · queue billing", "danger"),
    ("resolved", "[RESOLVED] SidekiqQueueLatencyHigh · queue billing", "good"),
])  # fmt: skip
def test_slack_message_names_the_alert_queue_summary_and_runbook(
    status: str, title: str, color: str, tmp_path: Path
) -> None:
    rule = _rule("SidekiqQueueLatencyHigh")
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_group(status, rule, {"queue": "billing", "name": "billing"})))
    assert _render(data, "sidekiq.slack.title").strip() == title
    assert _render(data, "sidekiq.slack.color").strip() == color
    assert _render(data, "sidekiq.slack.titlelink").strip() == rule.annotations["runbook_url"]
    text = _render(data, "sidekiq.slack.text")
    assert "Sidekiq queue billing has high latency" in text
    assert "*Queue:* `billing`" in text
    assert f"<{rule.annotations['runbook_url']}|SidekiqQueueLatencyHigh" in text
    assert ("RESOLVED" in text) == (status == "resolved")


def _has_route(app: Starlette, method: str, path: str) -> bool:
    """A route of the app's router, or one of the ingest POSTs its fast lane answers."""
    if method == "POST" and ingest.match(path) is not None:
        return True
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


def test_runbooks_link_pages_and_routes_that_exist() -> None:
    text = RUNBOOKS.read_text()
    pattern = r"`(?:(GET|POST) )?(/(?:sidekiq|api/|healthz|readyz)[^`\s?]*)"
    links = set(re.findall(pattern, text))
    assert len(links) > 10, links
    app = create_app(make_settings("sqlite:///unused.db"))  # builds routes; opens nothing
    for method, path in sorted(links):
        concrete = re.sub(r"<[^>]+>", "x", path)
        assert _has_route(app, method or "GET", concrete), f"{method} {path}: no such route"


def _check_command(words: list[str]) -> None:
    """Walk the CLI's command groups along `words` and parse the rest as the command would
    (an unknown option or a bad value raises)."""
    command = typer.main.get_command(cli)
    args = [re.sub(r"<[^>]+>", "x", word) for word in words]
    while isinstance(command, TyperGroup):
        name, *args = args
        found = command.commands.get(name)
        assert found is not None, f"`{' '.join(words)}`: no command {name}"
        command = found
    command.make_context(command.name or "", args)


def test_runbooks_name_real_commands_and_settings() -> None:
    text = RUNBOOKS.read_text()
    commands = re.findall(r"`sidekiq-supervisor ([^`\n]+)`", text)
    assert len(commands) >= 5, commands
    for command in commands:
        _check_command(command.split())
    settings = set(re.findall(r"SUPERVISOR_([A-Z_]+[A-Z])", text))
    assert settings - set(Settings.model_fields) == set(), "settings that do not exist"
