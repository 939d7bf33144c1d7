"""The Grafana dashboard (deploy/grafana) imports cleanly and queries only what the daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT
from tests.test_alert_rules import exported_series_names

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "jobrunner-dashboard.json"
# Prometheus' own series the dashboard may use besides jobrunner's
FOREIGN_SERIES = {"up"}
# Grafana's variables, replaced by something PromQL parses
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$job_type": "analyze_image",
    "$job": "jobrunner",
    "$queue": "default",
    "$instance": "a:9108",
}
# a selector's metric name: an identifier right before `{` (functions are followed by `(`)
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", [])]


def _variable_queries(dashboard: dict[str, Any]) -> list[str]:
    return [variable["definition"] for variable in dashboard["templating"]["list"]]


def _substituted(expr: str) -> str:
    # longest first: $job_type before $job
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def test_the_dashboard_is_importable_json_with_a_datasource_input() -> None:
    dashboard = _dashboard()
    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None  # a fixed id would clash with the importing instance's
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_the_dashboard_shows_what_operators_need() -> None:
    exprs = "\n".join(_exprs(_dashboard()))
    for needed in (
        "jobrunner_jobs_finished_total",
        "histogram_quantile(0.99, sum by (le) (rate(jobrunner_job_duration_seconds_bucket",
        "jobrunner_job_start_delay_seconds_bucket",
        "jobrunner_queue_jobs",
        "jobrunner_queue_oldest_runnable_age_seconds",
        'outcome="dead"',
        "jobrunner_jobs_in_flight",
        "jobrunner_concurrency_slots",
        "jobrunner_database_errors_total",
        "jobrunner_lease_rescues_total",
        "jobrunner_lost_leases_total",
        "jobrunner_upstream_usage_total",
    ):
        assert needed in exprs, needed


def test_every_query_uses_only_exported_metrics() -> None:
    dashboard = _dashboard()
    allowed = exported_series_names() | FOREIGN_SERIES
    used = {name for expr in [*_exprs(dashboard), *_variable_queries(dashboard)] for name in _SELECTOR.findall(expr)}
    assert "jobrunner_jobs_finished_total" in used
    assert used <= allowed, used - allowed


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses recording rules' expressions: one rule per panel query
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _substituted(expr)} for i, expr in enumerate(_exprs(_dashboard()))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
