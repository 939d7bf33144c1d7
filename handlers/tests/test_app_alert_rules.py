"""The API's alerting rules (deploy/prometheus/glow-app-alerts.yml) are valid, fire when and only when
they should (promtool's unit tests), and read only series the daemon and the app sampler export."""

from __future__ import annotations

import re

import asyncpg
import pytest
import yaml

from jobrunner.metrics import DaemonMetrics
from jobrunner_handlers.api_monitoring import sample_api
from tests.test_alert_rules import (
    RULES_DIR,
    assert_every_alert_tested_both_ways,
    assert_promtool_accepts,
    assert_rule_tests_pass,
    exported_series_names,
    needs_promtool,
)

RULES = RULES_DIR / "glow-app-alerts.yml"
RULE_TESTS = RULES_DIR / "glow-app-alerts.test.yml"
ALERTS = {
    "GlowApiHighErrorRate",
    "GlowApiSlowResponses",
    "GlowApiRateLimitViolations",
    "GlowApiDatabaseErrors",
    "GlowDatabaseConnectionsNearLimit",
    "GlowApiMetricsNotSampled",
}


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert_promtool_accepts(RULES, ALERTS)


@needs_promtool
def test_the_rules_fire_on_their_fixtures_and_stay_quiet_otherwise() -> None:
    assert_rule_tests_pass(RULE_TESTS)


def test_every_alert_is_tested_both_ways() -> None:
    assert_every_alert_tested_both_ways(RULES, RULE_TESTS, ALERTS)


async def test_the_rules_read_only_what_is_exported(
    pool: asyncpg.Pool, conn: asyncpg.Connection, clean_app_env: pytest.MonkeyPatch
) -> None:
    # one request and one rate-limit window, so that every family has a series
    await conn.fetchval(
        """SELECT record_api_requests('[{"endpoint": "feed", "status_code": 200, "response_time_ms": 5}]')"""
    )
    await conn.fetchval("SELECT check_rate_limit(gen_random_uuid(), 'general')")
    sampled = {family.name for family in await sample_api(pool) if family.samples}
    exported = sampled | exported_series_names(DaemonMetrics()) | {"up"}
    text = "\n".join(rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"])
    used = set(re.findall(r"\b([a-z_][a-z0-9_]*)\{", text))
    assert {"glow_api_requests", "jobrunner_plugin_sampler_leader", "up"} <= used
    assert used <= exported, used - exported
