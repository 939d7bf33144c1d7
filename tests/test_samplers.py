"""Plugin samplers (jobrunner.samplers): a plugin's own figures from the database on /metrics,
sampled by one replica at a time, bounded, and dropped rather than left stale when a sample fails."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
import pytest
from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily

import jobrunner
from jobrunner import Sampler
from jobrunner.handler import handler
from jobrunner.metrics import DaemonMetrics
from jobrunner.plugin_entry_points import objects_in
from jobrunner.samplers import SamplerError
from tests.support import running_daemon, wait_for, wait_until
from tests.test_ops_endpoint import _samples


@handler("sampled_noop")
async def noop(ctx: Any) -> None:
    return None


def gauge(name: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, f"{name} for the tests", labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


async def pending_jobs(pool: asyncpg.Pool) -> Iterable[Metric]:
    jobs = await pool.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'pending'")
    return [gauge("test_pending_jobs", jobs)]


PENDING = Sampler("test_pending", pending_jobs)


def exported(metrics: DaemonMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return _samples(metrics.exposition().decode())


def leader_gauge(metrics: DaemonMetrics, name: str) -> float:
    return exported(metrics)[("jobrunner_plugin_sampler_leader", frozenset({("sampler", name)}))]


def test_the_public_api_has_it() -> None:
    assert "Sampler" in jobrunner.__all__ and jobrunner.Sampler is Sampler


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"name": "Bad-Name"}, "1-63 of a-z"),
        ({"name": ""}, "1-63 of a-z"),
        ({"name": "x" * 64}, "1-63 of a-z"),
        ({"interval": 0.0}, "interval must be positive"),
        ({"max_series": 0}, "max_series must be at least 1"),
    ],
)
def test_a_sampler_is_checked_when_declared(arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(SamplerError, match=error):
        Sampler(**{"name": "ok", "sample": pending_jobs, **arguments})


def test_an_entry_point_names_samplers_and_nothing_else() -> None:
    assert list(objects_in(PENDING, Sampler, "here", SamplerError)) == [PENDING]
    assert list(objects_in([PENDING], Sampler, "here", SamplerError)) == [PENDING]
    for wrong in ("text", {"a": PENDING}, [PENDING, "x"], 3):
        with pytest.raises(SamplerError, match="Sampler"):
            list(objects_in(wrong, Sampler, "entry point x", SamplerError))


async def test_one_replica_samples_and_the_other_takes_over_when_it_stops(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO background_jobs (job_type, scheduled_at) SELECT 'later', now() + interval '1 hour' "
        "FROM generate_series(1, 3)"
    )
    key = ("test_pending_jobs", frozenset())
    async with (
        running_daemon(db_url, [noop], worker_id="replica-a", samplers=[PENDING]) as first,
        running_daemon(db_url, [noop], worker_id="replica-b", samplers=[PENDING]) as second,
    ):
        lease = "SELECT holder FROM jobrunner_leaders WHERE name = 'sampler:test_pending'"
        await wait_for(conn, f"SELECT count(*) FROM ({lease}) AS l", expect=1)
        holder = await conn.fetchval(lease)
        leader, other = (first, second) if holder == first.worker_id else (second, first)
        await wait_until(lambda: exported(leader.metrics).get(key) == 3, what="the leader's sample")
        assert leader_gauge(leader.metrics, "test_pending") == 1
        # the other replica runs no query for it and exports nothing of it, only its leader gauge at 0
        assert key not in exported(other.metrics) and leader_gauge(other.metrics, "test_pending") == 0

        # the leader stops and hands the lease back; the other samples from then on
        await conn.execute("INSERT INTO background_jobs (job_type, scheduled_at) VALUES ('later', now() + '1 hour')")
        leader.request_stop()
        await wait_until(lambda: exported(other.metrics).get(key) == 4, what="the other replica's sample")
        assert leader_gauge(other.metrics, "test_pending") == 1
        assert await conn.fetchval(lease) == other.worker_id
    assert await conn.fetchval(f"SELECT count(*) FROM ({lease}) AS l") == 0


async def test_a_sample_that_breaks_the_rules_is_dropped_not_left_stale(db_url: str, conn: asyncpg.Connection) -> None:
    state = {"mode": "ok"}

    async def sample(pool: asyncpg.Pool) -> Iterable[Metric]:
        mode = state["mode"]
        if mode == "database":
            await pool.fetchval("SELECT * FROM no_such_table")
        if mode == "bug":
            raise TypeError("the plugin's own bug")
        if mode == "too many":
            return [gauge("test_many", 1, endpoint=str(i)) for i in range(6)]  # one family per series
        if mode == "reserved":
            return [gauge("jobrunner_jobs_in_flight", 1)]
        if mode == "not a metric":
            return ["test 1"]  # type: ignore[list-item]
        return [gauge("test_rules", 1, endpoint="a"), gauge("test_rules_other", 2)]

    bounded = Sampler("test_rules", sample, max_series=5)
    ok_key = ("test_rules", frozenset({("endpoint", "a")}))
    async with running_daemon(db_url, [noop], samplers=[bounded]) as daemon:
        await wait_until(lambda: ok_key in exported(daemon.metrics), what="a first sample")
        errors = daemon.metrics.database_errors.labels("plugin_sampler")
        for mode, counted in [("database", 1), ("bug", 0), ("too many", 0), ("reserved", 0), ("not a metric", 0)]:
            before = errors._value.get()
            state["mode"] = mode
            await wait_until(lambda: ok_key not in exported(daemon.metrics), what=f"the {mode} sample dropped")
            assert not any(name.startswith("test_") for name, _ in exported(daemon.metrics))
            # a failed turn is counted before its sample is dropped: database errors only
            if counted:
                assert errors._value.get() >= before + counted
            else:
                assert errors._value.get() == before
            state["mode"] = "ok"
            await wait_until(lambda: ok_key in exported(daemon.metrics), what="the sampler recovering")


async def test_two_samplers_cannot_export_one_name(db_url: str) -> None:
    async def first(pool: asyncpg.Pool) -> Iterable[Metric]:
        return [gauge("test_shared", 1)]

    async def second(pool: asyncpg.Pool) -> Iterable[Metric]:
        return []

    async with running_daemon(db_url, [noop], samplers=[Sampler("test_a", first)]) as daemon:
        await wait_until(lambda: ("test_shared", frozenset()) in exported(daemon.metrics), what="the first sample")
        with pytest.raises(SamplerError, match="test_shared exported by sampler test_a"):
            daemon.metrics.sampled.replace(Sampler("test_b", second), [gauge("test_shared", 2), gauge("test_b", 3)])
        assert exported(daemon.metrics)[("test_shared", frozenset())] == 1
        assert ("test_b", frozenset()) not in exported(daemon.metrics)
