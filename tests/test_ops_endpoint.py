"""The metrics/health endpoint of a running daemon, read over real HTTP."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from jobrunner import JobContext, PermanentError, handler
from tests.support import running_daemon, wait_for


@handler("ops_ok")
async def ops_ok(ctx: JobContext[dict[str, object]]) -> None:
    ctx.report_usage("tokens", 7)


@handler("ops_bad")
async def ops_bad(ctx: JobContext[dict[str, object]]) -> None:
    raise PermanentError("no")


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


LEADER_GAUGE = "jobrunner_queue_sampler_leader"


async def test_metrics_match_the_database_and_health_endpoints_answer(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO background_jobs (job_type) SELECT 'ops_ok' FROM generate_series(1, 5);"
        "INSERT INTO background_jobs (job_type) VALUES ('ops_bad');"
        "INSERT INTO background_jobs (job_type, scheduled_at) VALUES ('ops_ok', now() + interval '1 hour')"
    )
    async with running_daemon(db_url, [ops_ok, ops_bad], readiness_interval=0.1) as daemon:
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE finished_at IS NOT NULL", expect=6)
        assert daemon.ops_server is not None
        base = f"http://127.0.0.1:{daemon.ops_server.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            # the outcome counters move after the commit; let the sampler see the delayed job too
            await wait_for(conn, "SELECT count(*) FROM jobrunner_leaders WHERE name = 'queue_sampler'", expect=1)
            metrics = (await http.get("/metrics")).text
            samples = _samples(metrics)
            ok = frozenset({("job_type", "ops_ok"), ("queue", "default")})
            bad = frozenset({("job_type", "ops_bad"), ("queue", "default")})
            assert samples[("jobrunner_jobs_claimed_total", ok)] == 5
            assert samples[("jobrunner_jobs_finished_total", ok | {("outcome", "completed")})] == 5
            assert samples[("jobrunner_jobs_finished_total", bad | {("outcome", "failed")})] == 1
            assert samples[("jobrunner_job_duration_seconds_count", ok)] == 5
            assert (
                samples[("jobrunner_upstream_usage_total", frozenset({("job_type", "ops_ok"), ("kind", "tokens")}))]
                == 35
            )
            assert samples[("jobrunner_concurrency_slots", frozenset())] == 10
            assert samples[("jobrunner_listen_connected", frozenset())] == 1

            health = await http.get("/healthz")
            assert health.status_code == 200
            assert await readyz_turns(http, 200) == "ready\n"
            assert (await http.get("/nothing-else")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405

            # readiness follows the database (its probe checks every readiness_interval): cut it
            # and it flips to 503
            await conn.execute("ALTER TABLE jobrunner_migrations RENAME TO jobrunner_migrations_gone")
            assert "migrations pending" in await readyz_turns(http, 503)
            await conn.execute("ALTER TABLE jobrunner_migrations_gone RENAME TO jobrunner_migrations")
            await readyz_turns(http, 200)


async def readyz_turns(http: httpx.AsyncClient, status: int, timeout: float = 10.0) -> str:
    """/readyz's body once it answers `status` (it reports the readiness probe's last check)."""
    deadline = time.monotonic() + timeout
    while (response := await http.get("/readyz")).status_code != status:
        assert time.monotonic() < deadline, f"/readyz still answers {response.status_code}: {response.text}"
        await asyncio.sleep(0.05)
    return response.text


async def test_queue_depth_is_sampled_by_one_replica_only(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO background_jobs (job_type, scheduled_at) VALUES ('later', now() + interval '1 hour')"
    )
    async with (
        running_daemon(db_url, [ops_ok], worker_id="replica-a") as first,
        running_daemon(db_url, [ops_ok], worker_id="replica-b") as second,
    ):
        await wait_for(conn, "SELECT count(*) FROM jobrunner_leaders WHERE name = 'queue_sampler'", expect=1)
        leaders = [
            d for d in (first, second) if d.metrics.registry.get_sample_value("jobrunner_queue_sampler_leader") == 1
        ]
        holder = await conn.fetchval("SELECT holder FROM jobrunner_leaders WHERE name = 'queue_sampler'")
        assert [d.worker_id for d in leaders] == [holder]
        depth = _samples(leaders[0].metrics.exposition().decode())
        assert depth[("jobrunner_queue_jobs", frozenset({("queue", "default"), ("status", "pending")}))] == 1
        # only a later job waits: nothing is runnable, so nothing has waited (not 1970's age)
        assert depth[("jobrunner_queue_oldest_runnable_age_seconds", frozenset({("queue", "default")}))] == 0
