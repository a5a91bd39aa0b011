"""The Grafana kit (grafana/): provisioning and dashboards parse and agree with each other; every
PromQL expression parses with promtool and reads only metrics the service exports; every SQL
panel runs on the migrated MariaDB schema, macros expanded as Grafana does, over seeded rows."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from tests.ops import grafana_history_seed as seed
from tests.ops.grafana_history import HistoryRun, Result, run_history
from tests.ops.grafana_kit import (
    DASHBOARDS,
    DATASOURCES,
    HISTORY,
    MYSQL_UID,
    OVERVIEW,
    PROMETHEUS_UID,
    PROVIDERS,
    README,
    datasources,
    load_dashboard,
    load_yaml,
    panels,
)
from tests.ops.grafana_queries import (
    label_values_selector,
    metric_names,
    prometheus_query,
    substitute,
    variables_in,
)
from tests.ops.grafana_scrape import exported_names, scrape_service

SCHEMA_VERSION = 41  # Grafana 12's dashboard schema
PROMETHEUS = "prometheus"
MYSQL = "mysql"
# Grafana's own names: the SQL data sources' macros, the built-in interval and range
# variables, and the "All" value of a multi-value variable.
BUILTINS = frozenset(
    "__interval __interval_ms __rate_interval __range __all __timeFilter __timeFrom __timeTo "
    "__timeGroup __timeGroupAlias __unixEpochFilter __unixEpochFrom __unixEpochTo".split()
)
# Plausible values for the overview's variables, to hand promtool plain PromQL.
PROMQL_VALUES = {
    "__rate_interval": "2m",
    "__interval": "30s",
    "__range": "6h",
    "job": "sidekiq-supervisor",
    "queue": "default|mailers",
    "worker": "HardJob|other",
}
ENV_REFERENCE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)\}?")
COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
NO_PROMTOOL = "promtool is missing: install Debian's `prometheus` package (make system-deps)"


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def env_references(path: Path) -> set[str]:
    """Environment variables a provisioning file's values name (comments are no values)."""
    return {name for text in strings(load_yaml(path)) for name in ENV_REFERENCE.findall(text)}


# -- provisioning ---------------------------------------------------------------------------


def test_datasources_have_fixed_uids_and_take_credentials_from_the_environment() -> None:
    assert load_yaml(DATASOURCES)["apiVersion"] == 1
    sources = datasources()
    assert {uid: source["type"] for uid, source in sources.items()} == {
        PROMETHEUS_UID: PROMETHEUS,
        MYSQL_UID: MYSQL,
    }
    mysql = sources[MYSQL_UID]
    secrets = [mysql["url"], mysql["user"], mysql["jsonData"]["database"]]
    secrets.append(mysql["secureJsonData"]["password"])
    assert all(ENV_REFERENCE.fullmatch(value) for value in secrets), secrets
    assert "password" not in mysql  # only secureJsonData is stored encrypted
    # The ledger stores naive UTC DATETIMEs; the macros' FROM_UNIXTIME and UNIX_TIMESTAMP
    # read them in the session zone, which Grafana sets from this.
    assert mysql["jsonData"]["timezone"] == "+00:00"
    assert ENV_REFERENCE.fullmatch(sources[PROMETHEUS_UID]["url"])


def test_every_environment_variable_is_documented() -> None:
    names = env_references(DATASOURCES) | env_references(PROVIDERS)
    assert len(names) >= 5
    readme = README.read_text()
    assert [name for name in names if f"`{name}`" not in readme] == []


def test_the_dashboard_provider_loads_the_dashboards_directory() -> None:
    config = load_yaml(PROVIDERS)
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path.startswith("/")
    # The README's mount instructions put grafana/dashboards/ at exactly that path.
    assert f"grafana/dashboards:{path}" in README.read_text()
    files = sorted(p.name for p in DASHBOARDS.iterdir())
    assert files == sorted([OVERVIEW, HISTORY])
    uids = [load_dashboard(name)["uid"] for name in files]
    assert len(set(uids)) == len(uids)


# -- dashboard models -----------------------------------------------------------------------


def overlapping(placed: list[dict[str, Any]]) -> list[str]:
    """Titles of panels whose grid cells another panel already covers, or past 24 columns."""
    taken: set[tuple[int, int]] = set()
    bad = []
    for panel in placed:
        pos = panel["gridPos"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        if cells & taken or pos["x"] + pos["w"] > 24:
            bad.append(panel["title"])
        taken |= cells
    return bad


@pytest.mark.parametrize(("name", "kind"), [(OVERVIEW, PROMETHEUS), (HISTORY, MYSQL)])
def test_dashboard_model(name: str, kind: str) -> None:
    dashboard = load_dashboard(name)
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["uid"]
    assert dashboard["title"]
    everything = list(panels(dashboard))
    ids = [panel["id"] for panel in everything]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert overlapping(everything) == []
    sources = datasources()
    expected = next(uid for uid, source in sources.items() if source["type"] == kind)
    refs = [
        (panel["title"], ref)
        for panel in everything
        if panel["type"] != "row"
        for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]
    ]
    variables = dashboard["templating"]["list"]
    refs += [(v["name"], v["datasource"]) for v in variables if v["type"] == "query"]
    wrong = [(title, ref) for title, ref in refs if ref != {"type": kind, "uid": expected}]
    assert wrong == []
    assert all(panel["targets"] for panel in everything if panel["type"] != "row")


@pytest.mark.parametrize("name", [OVERVIEW, HISTORY])
def test_every_variable_used_is_defined_and_every_one_defined_is_used(name: str) -> None:
    dashboard = load_dashboard(name)
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    used = set(variables_in(json.dumps(dashboard)))
    assert used - BUILTINS == defined
    assert {n for n in used if n.startswith("__")} <= BUILTINS


# -- PromQL ---------------------------------------------------------------------------------


def promql(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(record name naming the panel or variable, expression) for every PromQL query, with
    the variables substituted and label_values() turned into its series selector."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            slug = re.sub(r"[^a-z0-9]+", "_", panel["title"].lower()).strip("_")
            found.append((f"panel_{panel['id']}_{slug}_{target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = label_values_selector(prometheus_query(variable["query"]))
            found.append((f"variable_{variable['name']}", selector))
    return [(record, substitute(expr, PROMQL_VALUES)) for record, expr in found]


def promtool_check(
    tmp_path: Path, rules: list[tuple[str, str]]
) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(NO_PROMTOOL)
    group = {"name": "grafana", "rules": [{"record": r, "expr": e} for r, e in rules]}
    path = tmp_path / "grafana-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    command = [promtool, "check", "rules", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_every_promql_expression_parses_with_promtool(tmp_path: Path) -> None:
    rules = promql(load_dashboard(OVERVIEW))
    assert len(rules) >= 60
    assert [record for record, expr in rules if "$" in expr] == []
    done = promtool_check(tmp_path, rules)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
    # The same harness notices a broken expression, and names its panel.
    broken = promtool_check(tmp_path, [*rules[:1], ("panel_0_broken_A", "sum(rate(x[5m])")])
    assert broken.returncode != 0
    assert "panel_0_broken_A" in broken.stdout + broken.stderr


async def test_every_promql_metric_is_exported_by_the_service(
    sqlite_url: str, redis: Redis
) -> None:
    exported = exported_names(await scrape_service(sqlite_url, redis))
    # The scrape held the Sidekiq gauges, our job metrics and our health metrics.
    assert {"sidekiq_queue_latency_seconds", "sidekiq_job_run_seconds_bucket"} <= exported
    assert "supervisor_sampler_last_success_timestamp_seconds" in exported
    used = {record: metric_names(expr) for record, expr in promql(load_dashboard(OVERVIEW))}
    assert [record for record, names in used.items() if not names] == []
    unknown = {record: names - exported for record, names in used.items() if names - exported}
    assert unknown == {}


# -- SQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history(mysql_url: str) -> HistoryRun:
    return asyncio.run(run_history(mysql_url))


def shape_problems(title: str, result: Result) -> list[str]:
    """What is wrong with a result for its panel format (time series or table)."""
    if not result.rows:
        return [f"{title}: no rows"]
    if result.format == "table":
        unnamed = [c for c in result.columns if not COLUMN_NAME.fullmatch(c)]
        return [f"{title}: unnamed columns {unnamed}"] if unnamed else []
    if "time" not in result.columns:
        return [f"{title}: no time column in {result.columns}"]
    times = result.column("time")
    lowest = seed.SPAN.start_epoch - result.interval
    problems = []
    if times != sorted(times):
        problems.append(f"{title}: rows not sorted by time")
    if not all(isinstance(t, int) and lowest <= t <= seed.SPAN.end_epoch for t in times):
        problems.append(f"{title}: times outside the range: {times[:3]}...")
    values = [c for c in result.columns if c not in ("time", "metric")]
    if not any(isinstance(v, int | float | Decimal) for c in values for v in result.column(c)):
        problems.append(f"{title}: no numeric value in {values}")
    return problems


def test_every_sql_panel_answers_in_the_shape_of_its_format(history: HistoryRun) -> None:
    assert len(history.results) >= 14
    problems = [p for title, r in history.results.items() for p in shape_problems(title, r)]
    assert problems == []


def test_variables_list_what_was_seeded(history: HistoryRun) -> None:
    assert history.variables["queue"] == list(seed.QUEUES)
    classes = {run.job_class for run in seed.COMPLETED} | {"SlowJob", "LostJob", "FlakyJob"}
    assert history.variables["class"] == sorted(classes)
    assert history.variables["stuck_minutes"] == ["60"]


def test_queue_series_are_per_minute_and_per_queue(history: HistoryRun) -> None:
    depth = history.results["Queue depth"]
    assert set(depth.column("metric")) == set(seed.QUEUES)
    # One sample a minute: one point per queue and minute, all inside the range.
    assert len(depth.rows) == seed.MINUTES * len(seed.QUEUES)
    latency = history.results["Queue latency"]
    assert {
        m: float(v) for m, v in zip(*map(latency.column, ("metric", "latency")), strict=True)
    } == {
        "default": 0.0,
        "mailers": 1.5,
    }


def test_throughput_is_the_increase_between_consecutive_samples(history: HistoryRun) -> None:
    result = history.results["Processed and failed per minute"]
    processed = [v for v in result.column("processed") if v is not None]
    failed = [v for v in result.column("failed") if v is not None]
    # The first sample of the range has no predecessor inside it; samples outside the range
    # (counters far off) must not leak in.
    assert len(processed) == seed.MINUTES - 1
    assert set(processed) == {seed.PROCESSED_PER_MINUTE}
    assert set(failed) == {seed.FAILED_PER_MINUTE}


def test_ledger_panels_count_uncompleted_stuck_and_lost_jobs(history: HistoryRun) -> None:
    [now] = history.results["Jobs now"].rows
    assert tuple(int(n) for n in now) == (seed.UNCOMPLETED, len(seed.STUCK_JIDS), 1)
    assert tuple(history.results["Stuck jobs (oldest first)"].column("jid")) == seed.STUCK_JIDS
    assert history.results["Lost jobs (newest 100)"].column("jid") == [seed.LOST_JID]
    outcomes = history.results["Failed, dead and lost jobs"]
    counts = dict(zip(outcomes.column("metric"), outcomes.column("jobs"), strict=True))
    assert counts == {"failed": 1, "dead": 1, "lost": 1}


def test_duration_percentiles_are_nearest_rank_per_class(history: HistoryRun) -> None:
    result = history.results["Duration percentiles by class"]
    rows = {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}
    assert set(rows) == {"EasyJob", "HardJob"}
    for job_class, row in rows.items():
        runs = [run for run in seed.COMPLETED if run.job_class == job_class]
        assert row["completed"] == len(runs)
        for kind in ("wait", "run"):
            times = [getattr(run, kind) for run in runs]
            for p in ("0.50", "0.95", "0.99"):
                expected = seed.nearest_rank(times, p)
                got = float(row[f"{kind}_p{p[2:]}"])
                assert got == pytest.approx(expected), (job_class, kind, p)
        assert float(row["run_max"]) == pytest.approx(max(run.run for run in runs))
    slowest = history.results["Slowest classes"]
    assert slowest.column("class") == ["HardJob", "EasyJob"]
    assert len(history.results["Run time p95 by class"].rows) == len(seed.COMPLETED)
