"""The Prometheus alerting rules (deploy/prometheus) are valid and fire when, and only when, they should."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from jobrunner.metrics import DaemonMetrics
from tests.support import REPO_ROOT

RULES_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "jobrunner-alerts.yml"
RULE_TESTS = RULES_DIR / "jobrunner-alerts.test.yml"
ALERTS = {
    "JobrunnerHighErrorRate",
    "JobrunnerSlowInteractiveJobs",
    "JobrunnerDeadJobs",
    "JobrunnerOldestRunnableJobTooOld",
    "JobrunnerQueueDepthNotSampled",
    "JobrunnerNoHealthyReplica",
    "JobrunnerDatabaseUnreachable",
}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60)


def assert_promtool_accepts(rules: Path, alerts: set[str]) -> None:
    result = _promtool("check", "rules", rules.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout


def assert_rule_tests_pass(rule_tests: Path) -> None:
    result = _promtool("test", "rules", rule_tests.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def assert_every_alert_tested_both_ways(rules: Path, rule_tests: Path, alerts: set[str]) -> None:
    """The rules file holds exactly `alerts`, and its promtool tests make each one fire and keep
    each one quiet."""
    declared = [rule for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in declared} == alerts
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(rule_tests.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == alerts
    assert quiet == alerts


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert_promtool_accepts(RULES, ALERTS)


@needs_promtool
def test_the_rules_fire_on_their_fixtures_and_stay_quiet_otherwise() -> None:
    assert_rule_tests_pass(RULE_TESTS)


def test_every_alert_is_tested_both_ways() -> None:
    assert_every_alert_tested_both_ways(RULES, RULE_TESTS, ALERTS)


def test_the_rules_use_only_metrics_the_daemon_exports() -> None:
    exported = exported_series_names()
    used = set(re.findall(r"\b(jobrunner_[a-z_]+)\b", RULES.read_text()))
    assert used, "no jobrunner metric in the rules?"
    assert used <= exported, used - exported


def exported_series_names(metrics: DaemonMetrics | None = None) -> set[str]:
    """Every series name a daemon can export: counters with _total (and _created), histograms
    with _bucket/_count/_sum, gauges as they are."""
    metrics = metrics or DaemonMetrics()
    names: set[str] = set()
    for family in metrics.registry.collect():
        kind = family.type
        if kind == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif kind == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


def test_exported_names_cover_a_real_exposition() -> None:
    metrics = DaemonMetrics()
    metrics.job_claimed("t", "default", 0.1)
    metrics.job_finished("t", "default", "completed", 0.2)
    metrics.usage("t", "tokens", 3)
    metrics.database_errors.labels("fetcher").inc()
    metrics.queue_jobs.labels("default", "pending").set(1)
    metrics.oldest_runnable.labels("default").set(1)
    text = metrics.exposition().decode()
    seen = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert seen <= exported_series_names(metrics), seen - exported_series_names(metrics)
