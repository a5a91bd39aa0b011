"""The alerting kit's files as data (alerts/: rules, promtool unit tests, README anchors), the
series our PromQL names, and the series the service's metric code really exports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from app.domain import BusyJob, EventName, JobEvent, ProcessInfo, QueueStats, Snapshot
from app.exporter.collector import SidekiqCollector
from app.exporter.jobs import JobMetrics
from app.exporter.process import IngestMetrics, SamplerMetrics
from tests.sidekiq.layouts import Held

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RULES = ALERTS / "sidekiq.rules.yaml"
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yaml"))
ALERTMANAGER = ALERTS / "alertmanager.yaml"
RUNBOOKS = ALERTS / "README.md"
# Series Prometheus itself adds to every scrape, and labels it adds to every series.
SCRAPE_SERIES = {"up": frozenset({"job", "instance"})}
TARGET_LABELS = frozenset({"job", "instance"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule of alerts/sidekiq.rules.yaml."""

    group: str
    alert: str
    expr: str
    duration: str | None
    labels: dict[str, str]
    annotations: dict[str, str]


def load_yaml(path: Path) -> Any:
    with path.open() as stream:
        return yaml.safe_load(stream)


def load_rules(path: Path = RULES) -> list[Rule]:
    return [
        Rule(
            group=group["name"],
            alert=rule["alert"],
            expr=rule["expr"],
            duration=rule.get("for"),
            labels=rule.get("labels", {}),
            annotations=rule.get("annotations", {}),
        )
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def unit_test_cases() -> list[tuple[Path, dict[str, Any]]]:
    """Every alert_rule_test entry of alerts/tests/*.yaml, with the file it is in."""
    return [
        (path, case)
        for path in UNIT_TESTS
        for test in load_yaml(path)["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown` (lowercase, punctuation dropped)."""
    anchors = set()
    prose = _FENCE.sub("", markdown)  # a `# comment` in a code block is no heading
    for heading in _HEADING.findall(prose):
        text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
        anchors.add(text.replace(" ", "-"))
    return anchors


def selectors(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression selects and the label names it matches or groups by.

    Enough PromQL for our rules: strings are dropped first (label_replace arguments, matcher
    values), then matchers, ranges and grouping clauses; an identifier left that is not followed
    by `(` (a function or aggregation) nor a keyword is a metric name.
    """
    bare = _STRING.sub('""', expr)
    labels = {
        part.split("=")[0].split("!")[0].split("~")[0].strip()
        for block in _MATCHERS.findall(bare)
        for part in block.split(",")
        if part.strip()
    }
    labels |= {
        name.strip()
        for group in _GROUPING.findall(bare)
        for name in group.split(",")
        if name.strip()
    }
    bare = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", bare)))
    names = {
        match.group()
        for match in _IDENT.finditer(bare)
        if match.group() not in _KEYWORDS and not bare[match.end() :].lstrip().startswith("(")
    }
    return names, labels


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the service's metric classes export, with its label names.

    Built as app/main.py builds them, each labelled metric given a child through the calls the
    app makes, and the Sidekiq collector given a snapshot with a queue, a quiet process that
    reports its memory, and a running job, so every family carries samples.
    """
    registry = CollectorRegistry()
    ingest = IngestMetrics(registry)
    ingest.events_ingested.labels("complete").inc()
    ingest.events_rejected.labels("database_down").inc()
    sampler = SamplerMetrics(registry)
    sampler.errors.labels("redis").inc()
    sampler.rows_deleted.labels("samples").inc(0)
    _observe_jobs(JobMetrics(registry, max_workers=10, max_queues=10, max_error_classes=10))
    registry.register(SidekiqCollector(Held(_snapshot()), max_age_seconds=60.0))
    series: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    exported = {name: frozenset(labels) for name, labels in series.items()}
    return exported | SCRAPE_SERIES


def _observe_jobs(metrics: JobMetrics) -> None:
    start = datetime.now(UTC) - timedelta(seconds=5)

    def event(jid: str, name: EventName, error_class: str | None = None) -> JobEvent:
        return JobEvent(
            jid, name, start + timedelta(seconds=1), received_at=start, job_class="HardJob",
            queue="default", error_class=error_class, enqueued_at=start, started_at=start,
        )  # fmt: skip

    events = [
        event("a", EventName.STARTED),
        event("a", EventName.COMPLETE),
        event("b", EventName.FAILED, "KeyError"),
        event("b", EventName.DEAD, "KeyError"),
    ]
    metrics.observe(events, {})
    metrics.set_stuck({("default", "HardJob"): 1})
    metrics.set_lost({("default", "HardJob"): 1})
    metrics.lost_detected("default", "HardJob")
    metrics.lookup_errors.inc(0)


def _snapshot() -> Snapshot:
    now = datetime.now(UTC)
    process = ProcessInfo(
        identity="worker-1:1:abc",
        hostname="worker-1",
        pid=1,
        tag="app",
        queues=("default",),
        labels=(),
        concurrency=5,
        busy=1,
        quiet=True,
        rss_kb=1024,
        beat=now,
        started_at=now,
        version="7.3.10",
    )
    busy = BusyJob("worker-1:1:abc", "tid", "default", "jid", "HardJob", now, "{}")
    return Snapshot(
        taken_at=now,
        processed=1,
        failed=1,
        scheduled=0,
        retries=0,
        dead=0,
        processes_size=1,
        queues=(QueueStats("default", 1, 2.0),),
        processes=(process,),
        busy_jobs=(busy,),
    )
