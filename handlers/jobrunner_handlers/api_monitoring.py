"""The API's numbers on the daemon's /metrics, so that alerts fire on what the app's users see.

The API layer records its requests with `record_api_requests` and counts its callers with
`check_rate_limit`; this sampler (entry point `jobrunner.samplers`, run by one replica at a time,
every JOBRUNNER_SAMPLE_INTERVAL) reads the last JOBRUNNER_APP_API_METRICS_WINDOW_SECONDS of
them and exports gauges over that window:

- `glow_api_requests{endpoint, status_class}`: requests by status class (1xx to 5xx)
- `glow_api_rate_limited_requests{endpoint}`: answered 429
- `glow_api_database_errors{endpoint}`: failed because the database could not be reached
- `glow_api_slow_requests{endpoint}`: slower than JOBRUNNER_APP_API_SLOW_REQUEST_MS (2000)
- `glow_api_response_time_p95_seconds{endpoint}`
- `glow_rate_limit_requests{endpoint_class}`, `glow_rate_limit_refusals{endpoint_class}`,
  `glow_rate_limit_refused_users{endpoint_class}`: check_rate_limit's calls, refusals, and the
  users refused at least once
- `glow_active_users{window}`: users seen within the last 5m, 1h, 24h
- `glow_database_connections`, `glow_database_connection_limit`: connections open on the
  server, and how many ordinary roles may open
- `glow_api_window_seconds`: the window the gauges above cover

Labels are bounded: `endpoint` is one of at most 50 names of api_metric_endpoints or `__other__`,
`endpoint_class` one of at most 50 classes of api_rate_limit_classes or `__other__`, and the rest
come from fixed sets. deploy/prometheus/glow-app-alerts.yml alerts on them.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily

from jobrunner import Sampler
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import app_settings

OTHER = "__other__"
MAX_ENDPOINT_CLASSES = 50
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ACTIVE_WINDOWS = (("5m", "last_5m"), ("1h", "last_1h"), ("24h", "last_24h"))


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def endpoint_families(rows: Iterable[asyncpg.Record]) -> list[Metric]:
    requests = _gauge(
        "glow_api_requests", "API requests over the window, by status class.", ("endpoint", "status_class")
    )
    rate_limited = _gauge("glow_api_rate_limited_requests", "API requests answered 429 over the window.", ("endpoint",))
    database = _gauge(
        "glow_api_database_errors", "API requests that failed for want of the database, over the window.", ("endpoint",)
    )
    slow = _gauge(
        "glow_api_slow_requests", "API requests slower than the slow threshold, over the window.", ("endpoint",)
    )
    p95 = _gauge(
        "glow_api_response_time_p95_seconds", "95th percentile of API response times over the window.", ("endpoint",)
    )
    for row in rows:
        endpoint = row["endpoint"]
        for status_class in STATUS_CLASSES:
            requests.add_metric([endpoint, status_class], row[f"responses_{status_class}"])
        rate_limited.add_metric([endpoint], row["rate_limited"])
        database.add_metric([endpoint], row["database_errors"])
        slow.add_metric([endpoint], row["slow"])
        p95.add_metric([endpoint], row["p95_ms"] / 1000.0)
    return [requests, rate_limited, database, slow, p95]


def rate_limit_families(rows: Iterable[asyncpg.Record]) -> list[Metric]:
    """Known classes by name (the first MAX_ENDPOINT_CLASSES), anything else summed as __other__."""
    totals: dict[str, list[int]] = {}
    named: set[str] = set()
    for row in rows:
        if row["known"] and (row["endpoint_class"] in named or len(named) < MAX_ENDPOINT_CLASSES):
            label = row["endpoint_class"]
            named.add(label)
        else:
            label = OTHER
        sums = totals.setdefault(label, [0, 0, 0])
        for index, column in enumerate(("requests", "refused", "users_refused")):
            sums[index] += row[column]
    calls = _gauge("glow_rate_limit_requests", "check_rate_limit calls over the window.", ("endpoint_class",))
    refused = _gauge("glow_rate_limit_refusals", "check_rate_limit calls refused over the window.", ("endpoint_class",))
    users = _gauge(
        "glow_rate_limit_refused_users", "Users refused by check_rate_limit over the window.", ("endpoint_class",)
    )
    for label, (call_count, refused_count, user_count) in sorted(totals.items()):
        calls.add_metric([label], call_count)
        refused.add_metric([label], refused_count)
        users.add_metric([label], user_count)
    return [calls, refused, users]


async def sample_api(pool: asyncpg.Pool) -> list[Metric]:
    settings = app_settings()
    window = settings.api_metrics_window_seconds
    async with pool.acquire() as conn:
        endpoints = await conn.fetch(sql("api_endpoint_sample"), window, settings.api_slow_request_ms)
        rate_limits = await conn.fetch(sql("api_rate_limit_sample"), window)
        active = await conn.fetchrow(sql("api_active_users_sample"))
        connections = await conn.fetchrow(sql("database_connections"))
    assert active is not None and connections is not None  # one row each
    active_users = _gauge("glow_active_users", "Users seen within the window (profiles.last_active_at).", ("window",))
    for label, column in ACTIVE_WINDOWS:
        active_users.add_metric([label], active[column])
    open_connections = _gauge("glow_database_connections", "Connections open on the database server.")
    open_connections.add_metric([], connections["connections"])
    limit = _gauge(
        "glow_database_connection_limit", "Connections ordinary roles may open (max_connections less the reserve)."
    )
    limit.add_metric([], connections["connection_limit"])
    window_seconds = _gauge("glow_api_window_seconds", "The window the glow_api_ and glow_rate_limit_ gauges cover.")
    window_seconds.add_metric([], window)
    return [
        *endpoint_families(endpoints),
        *rate_limit_families(rate_limits),
        active_users,
        open_connections,
        limit,
        window_seconds,
    ]


# 51 endpoint labels x 9 series + 51 classes x 3 + 7: within the default max_series (1000)
API_SAMPLER = Sampler("app_api", sample_api)
