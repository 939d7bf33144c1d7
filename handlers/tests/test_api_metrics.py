"""The API's requests: recorded in batches by the service key, bounded; the backend document's
monitoring queries over them; and the daemon's app sampler exporting them (with rate-limit
refusals, active users and database connections) under labels that stay a bounded set."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.tests.api_roles import ApiRoles
from handlers.tests.test_schema import ALICE, BOB
from jobrunner_handlers.api_monitoring import API_SAMPLER, sample_api
from jobrunner_handlers.example import echo
from tests.support import running_daemon, wait_until
from tests.test_ops_endpoint import _samples as samples


def request(endpoint: str = "analyze-image", status: int = 200, ms: int = 120, **more: Any) -> dict[str, Any]:
    return {"endpoint": endpoint, "status_code": status, "response_time_ms": ms, **more}


async def record(conn: asyncpg.Connection, requests: list[dict[str, Any]]) -> int:
    recorded: int = await conn.fetchval("SELECT record_api_requests($1::jsonb)", json.dumps(requests))
    return recorded


async def test_a_batch_is_recorded_in_one_call(api: ApiRoles, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO profiles (id) VALUES ($1), ($2)", ALICE, BOB)
    edge = await api.service_role()
    earlier = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    batch = [
        request(method="POST", user_id=str(ALICE)),
        request("feed", 503, 30_000, method="GET", user_id=str(ALICE), error_kind="database", at=earlier),
        request("feed", 200, 15, method=None, user_id=None, error_kind=None),
    ]
    assert await record(edge, batch) == 3
    rows = await conn.fetch(
        "SELECT endpoint, method, status_code, response_time_ms, user_id, error_kind FROM api_metrics "
        "ORDER BY response_time_ms"
    )
    assert [tuple(r) for r in rows] == [
        ("feed", None, 200, 15, None, None),
        ("analyze-image", "POST", 200, 120, ALICE, None),
        ("feed", "GET", 503, 30_000, ALICE, "database"),
    ]
    at = await conn.fetchval("SELECT created_at FROM api_metrics WHERE status_code = 503")
    assert at == datetime.fromisoformat(earlier)
    # its users are active, its endpoints labelled
    assert await conn.fetchval("SELECT last_active_at IS NOT NULL FROM profiles WHERE id = $1", ALICE)
    assert await conn.fetchval("SELECT last_active_at FROM profiles WHERE id = $1", BOB) is None
    assert [r["endpoint"] for r in await conn.fetch("SELECT endpoint FROM api_metric_endpoints ORDER BY 1")] == [
        "analyze-image",
        "feed",
    ]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("not an object", "is not a JSON object"),
        ({**request(), "extra": 1}, "has a key other than"),
        (request(endpoint=""), "endpoint is not 1 to 100"),
        (request(endpoint="x" * 101), "endpoint is not 1 to 100"),
        (request(endpoint="/users/1 OR 1=1"), "endpoint is not 1 to 100"),
        ({"status_code": 200, "response_time_ms": 1}, "endpoint is not"),
        (request(status=99), "status_code is not an integer from 100 to 599"),
        (request(status=600), "status_code is not an integer from 100 to 599"),
        ({**request(), "status_code": "200"}, "status_code is not an integer"),
        ({**request(), "status_code": 200.5}, "status_code is not an integer"),
        (request(ms=-1), "response_time_ms is not an integer from 0 to 3600000"),
        (request(ms=3_600_001), "response_time_ms is not an integer from 0 to 3600000"),
        ({**request(), "response_time_ms": None}, "response_time_ms is not an integer"),
        (request(method="FETCH"), "method is not one of"),
        (request(user_id="alice"), "user_id is not a UUID"),
        (request(user_id=7), "user_id is not a UUID"),
        (request(error_kind="oops"), "error_kind is not one of"),
        (request(at="yesterday"), "at is not an ISO 8601 time"),
        (request(at="2026-03-01T12:00:00"), "at is not an ISO 8601 time"),  # no offset: ambiguous
        (request(at=(datetime.now(UTC) - timedelta(days=2)).isoformat()), "at is not within the last day"),
        (request(at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()), "at is not within the last day"),
    ],
)
async def test_a_bad_request_refuses_the_whole_batch(
    api: ApiRoles, conn: asyncpg.Connection, bad: Any, problem: str
) -> None:
    edge = await api.service_role()
    with pytest.raises(asyncpg.InvalidParameterValueError, match=f"request 2 {problem}"):
        await record(edge, [request(), bad, request()])
    assert await conn.fetchval("SELECT count(*) FROM api_metrics") == 0


async def test_a_batch_is_bounded(api: ApiRoles, conn: asyncpg.Connection) -> None:
    edge = await api.service_role()
    for batch in ([request()] * 1001, {"endpoint": "x"}, "[]"):
        with pytest.raises(asyncpg.InvalidParameterValueError, match="a JSON array of at most 1000 requests"):
            await edge.fetchval("SELECT record_api_requests($1::jsonb)", json.dumps(batch))
    with pytest.raises(asyncpg.InvalidParameterValueError, match="a JSON array"):
        await edge.fetchval("SELECT record_api_requests(NULL)")
    assert await record(edge, [request()] * 1000) == 1000
    assert await record(edge, []) == 0


async def test_endpoint_labels_are_capped_at_50(conn: asyncpg.Connection) -> None:
    await record(conn, [request(f"endpoint-{i:02d}") for i in range(45)])
    await record(conn, [request(f"endpoint-{i:02d}") for i in range(40, 60)] + [request("endpoint-00")])
    labelled = [r["endpoint"] for r in await conn.fetch("SELECT endpoint FROM api_metric_endpoints ORDER BY 1")]
    assert labelled == [f"endpoint-{i:02d}" for i in range(50)]
    stats = {
        r["endpoint"]: r["requests"] for r in await conn.fetch("SELECT * FROM api_endpoint_stats('1 hour', 2000, true)")
    }
    assert len(stats) == 51 and stats["__other__"] == 10 and stats["endpoint-00"] == 2
    # without labels, as the monitoring queries read it: every endpoint by name
    assert await conn.fetchval("SELECT count(*) FROM api_endpoint_stats('1 hour')") == 60


async def seed_requests(conn: asyncpg.Connection) -> None:
    """analyze-image: 20 requests in the last hour, 2 of them 5xx and 3 s long (one for want of the
    database), 1 answered 429; feed: 10 fast ones; and an old slow one outside the hour."""
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    await record(
        conn,
        [request(ms=100) for _ in range(17)]
        + [request(status=429, ms=5)]
        + [request(status=500, ms=3000), request(status=503, ms=3000, error_kind="database")]
        + [request("feed", ms=50) for _ in range(10)]
        + [request("feed", status=500, ms=9000, at=two_hours_ago)],
    )


async def test_the_documents_monitoring_queries(api: ApiRoles, conn: asyncpg.Connection) -> None:
    await seed_requests(conn)
    edge = await api.service_role()
    slow = await edge.fetch("SELECT * FROM api_slow_endpoints('1 hour', 2000)")
    assert [(r["endpoint"], r["requests"], r["slow"], r["p95_ms"], r["max_ms"]) for r in slow] == [
        ("analyze-image", 20, 2, 3000.0, 3000)
    ]
    rates = await edge.fetch("SELECT * FROM api_error_rates('1 hour')")
    assert [tuple(r) for r in rates] == [("analyze-image", 20, 2, 1, 0.1), ("feed", 10, 0, 0, 0.0)]
    # over three hours the old feed request counts: 1 of its 11 takes 9 s, its p95 4.5 s
    slow = await edge.fetch("SELECT * FROM api_slow_endpoints('3 hours', 2000)")
    assert [(r["endpoint"], r["p95_ms"]) for r in slow] == [("feed", 4525.0), ("analyze-image", 3000.0)]
    assert await edge.fetchval("SELECT max_ms FROM api_endpoint_stats('3 hours') WHERE endpoint = 'feed'") == 9000
    await conn.execute(
        "INSERT INTO profiles (id, last_active_at) VALUES ($1, now() - interval '30 minutes'), "
        "($2, now() - interval '3 hours'), ($3, NULL)",
        ALICE,
        BOB,
        uuid.uuid4(),
    )
    assert [await edge.fetchval("SELECT api_active_users($1::text::interval)", w) for w in ("1 hour", "1 day")] == [
        1,
        2,
    ]
    for call in ("SELECT api_active_users('0 seconds')", "SELECT * FROM api_endpoint_stats('32 days')"):
        with pytest.raises(asyncpg.InvalidParameterValueError, match="window must be"):
            await edge.fetch(call)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="p_slow_ms"):
        await edge.fetch("SELECT * FROM api_endpoint_stats('1 hour', -1)")


async def test_the_daemon_exports_the_apis_numbers(
    db_url: str, conn: asyncpg.Connection, clean_app_env: pytest.MonkeyPatch
) -> None:
    await seed_requests(conn)
    await conn.execute("INSERT INTO api_rate_limit_classes (endpoint_class, max_per_minute) VALUES ('tiny', 1)")
    async with conn.transaction():
        answers = [await conn.fetchval("SELECT check_rate_limit($1, 'tiny')", ALICE) for _ in range(4)]
        answers += [await conn.fetchval("SELECT check_rate_limit($1, 'general')", BOB)]
    assert answers == [True, False, False, False, True]
    await conn.execute(
        "INSERT INTO profiles (id, last_active_at) VALUES ($1, now()), ($2, now() - interval '2 hours')", ALICE, BOB
    )

    def endpoint(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return (name, frozenset(labels.items()))

    async with running_daemon(db_url, [echo], samplers=[API_SAMPLER]) as daemon:
        exported: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

        def sampled() -> bool:
            exported.update(samples(daemon.metrics.exposition().decode()))
            return endpoint("glow_api_window_seconds") in exported

        await wait_until(sampled, what="the app sampler's first sample")
    analyze = {"endpoint": "analyze-image"}
    assert exported[endpoint("glow_api_requests", status_class="2xx", **analyze)] == 17
    assert exported[endpoint("glow_api_requests", status_class="4xx", **analyze)] == 1
    assert exported[endpoint("glow_api_requests", status_class="5xx", **analyze)] == 2
    assert exported[endpoint("glow_api_requests", status_class="2xx", endpoint="feed")] == 10
    assert exported[endpoint("glow_api_rate_limited_requests", **analyze)] == 1
    assert exported[endpoint("glow_api_database_errors", **analyze)] == 1
    assert exported[endpoint("glow_api_slow_requests", **analyze)] == 2
    assert exported[endpoint("glow_api_response_time_p95_seconds", **analyze)] == 3.0
    assert exported[endpoint("glow_api_response_time_p95_seconds", endpoint="feed")] == 0.05
    assert exported[endpoint("glow_rate_limit_requests", endpoint_class="tiny")] == 4
    assert exported[endpoint("glow_rate_limit_refusals", endpoint_class="tiny")] == 3
    assert exported[endpoint("glow_rate_limit_refused_users", endpoint_class="tiny")] == 1
    assert exported[endpoint("glow_rate_limit_refusals", endpoint_class="general")] == 0
    assert [exported[endpoint("glow_active_users", window=w)] for w in ("5m", "1h", "24h")] == [1, 1, 2]
    assert 1 <= exported[endpoint("glow_database_connections")] <= exported[endpoint("glow_database_connection_limit")]
    assert exported[endpoint("glow_api_window_seconds")] == 300
    assert exported[endpoint("jobrunner_plugin_sampler_leader", sampler="app_api")] == 1


async def test_labels_stay_bounded_whatever_the_api_records(
    pool: asyncpg.Pool, conn: asyncpg.Connection, clean_app_env: pytest.MonkeyPatch
) -> None:
    for start in range(0, 300, 100):
        await record(conn, [request(f"/users/{uuid.uuid4()}/photos") for _ in range(start, start + 100)])
    await conn.execute(
        "INSERT INTO api_rate_limit_classes (endpoint_class, max_per_minute) "
        "SELECT 'class_' || i, 1 FROM generate_series(1, 80) AS i"
    )
    await conn.execute(
        "INSERT INTO api_rate_limits (user_id, endpoint, window_start, request_count, refused_count) "
        "SELECT $1::uuid, 'class_' || i, date_trunc('minute', now()), 3, 2 FROM generate_series(1, 80) AS i "
        "UNION ALL "
        "SELECT $1, 'by-hand-' || i, date_trunc('minute', now()), 1, 1 FROM generate_series(1, 30) AS i",
        ALICE,
    )
    families = await sample_api(pool)
    series = [(family.name, sample.labels) for family in families for sample in family.samples]
    assert len(series) <= API_SAMPLER.max_series
    endpoints = {labels["endpoint"] for _, labels in series if "endpoint" in labels}
    classes = {labels["endpoint_class"] for _, labels in series if "endpoint_class" in labels}
    assert len(endpoints) == 51 and "__other__" in endpoints
    assert len(classes) == 51 and "__other__" in classes
    refusals = {
        labels["endpoint_class"]: s.value
        for f in families
        if f.name == "glow_rate_limit_refusals"
        for s in f.samples
        for labels in [s.labels]
    }
    # nothing is lost: what is not labelled by name is summed into __other__
    assert sum(refusals.values()) == 80 * 2 + 30 and refusals["__other__"] == 30 * 2 + 30
