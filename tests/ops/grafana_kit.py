"""The Grafana kit's files as the tests read them: provisioning YAML, dashboard JSON, panels."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "sidekiq-supervisor.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "sidekiq-supervisor.yaml"
README = GRAFANA / "README.md"
OVERVIEW = "sidekiq-overview.json"
HISTORY = "sidekiq-history.json"
PROMETHEUS_UID = "sidekiq-supervisor-prometheus"
MYSQL_UID = "sidekiq-supervisor-mysql"


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), path
    return loaded


def load_dashboard(name: str) -> dict[str, Any]:
    loaded = json.loads((DASHBOARDS / name).read_text())
    assert isinstance(loaded, dict), name
    return loaded


def datasources() -> dict[str, dict[str, Any]]:
    """The provisioned data sources by uid."""
    return {source["uid"]: source for source in load_yaml(DATASOURCES)["datasources"]}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])
