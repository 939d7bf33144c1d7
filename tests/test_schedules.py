"""Cron schedules: one job per tick however many replicas race, missed ticks per policy, no
backfill, DST, the no-fight rule for changed definitions, and `jobrunner schedules`.

Ticks are driven by an injected `now` (enqueue_due(now=...)), never by waiting for the clock,
except where real daemons fire the tick that is due right now.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import structlog
from pydantic import ValidationError

from jobrunner import JobContext, handler
from jobrunner.daemon.maintenance.scheduler import SchedulerService
from jobrunner.schedules import Schedule, ScheduleError, ScheduleTable, declared_schedules, load_schedules_file
from tests.support import jobrunner_process, make_settings, running_daemon, wait_for, wait_until

T0 = datetime(2025, 1, 6, 10, 0, 30, tzinfo=UTC)
EVERY_MINUTE = Schedule(name="every_minute", cron="* * * * *", job_type="cron_probe", payload={"n": 1})
BERLIN = ZoneInfo("Europe/Berlin")


@handler("cron_probe")
async def cron_probe(ctx: JobContext[dict[str, int]]) -> None:
    return None


def service(
    pool: asyncpg.Pool | asyncpg.Connection, *schedules: Schedule, holder: str = "r1", grace: float = 60.0
) -> SchedulerService:
    return SchedulerService(pool, "public", {s.name: s for s in schedules}, holder, misfire_grace=grace)


async def schedule_jobs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, job_type, queue, priority, max_attempts, payload::text AS payload, dedupe_key "
        "FROM background_jobs WHERE dedupe_key LIKE 'cron:%' ORDER BY id"
    )


# -- one tick, one job ----------------------------------------------------------------------


async def test_replicas_racing_one_tick_on_separate_connections_enqueue_one_job(db_url: str) -> None:
    async with AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(_connection(db_url)) for _ in range(5)]
        replicas = [service(c, EVERY_MINUTE, holder=f"r{i}") for i, c in enumerate(conns)]
        await replicas[0].register(now=T0)
        await asyncio.gather(*(r.register(now=T0) for r in replicas[1:]))  # same definition: no write
        tick_time = T0 + timedelta(seconds=30.5)  # 10:01:01
        fired = await asyncio.gather(*(r.enqueue_due(now=tick_time) for r in replicas))
        assert sum(len(f) for f in fired) == 1
        jobs = await schedule_jobs(conns[0])
        assert len(jobs) == 1
        assert jobs[0]["dedupe_key"] == "cron:every_minute:2025-01-06T10:01:00+00:00"
        assert jobs[0]["job_type"] == "cron_probe" and json.loads(jobs[0]["payload"]) == {"n": 1}
        row = await conns[0].fetchrow("SELECT version, last_tick, last_job_id FROM jobrunner_schedules")
        assert row is not None
        assert (row["version"], row["last_tick"], row["last_job_id"]) == (1, T0 + timedelta(seconds=30), jobs[0]["id"])
        # the same tick again, from anyone: nothing
        assert not any(await asyncio.gather(*(r.enqueue_due(now=tick_time) for r in replicas)))
        assert len(await schedule_jobs(conns[0])) == 1


async def test_in_process_daemons_fire_the_current_tick_once(db_url: str, conn: asyncpg.Connection) -> None:
    db_now: datetime = await conn.fetchval("SELECT now()")
    # registered two minutes ago, so the current minute's tick is due (and on time) right now
    await ScheduleTable(conn, "public").register([EVERY_MINUTE], "setup", now=db_now - timedelta(minutes=2))
    async with AsyncExitStack() as stack:
        for i in range(3):
            await stack.enter_async_context(
                running_daemon(db_url, [cron_probe], worker_id=f"replica-{i}", schedules=[EVERY_MINUTE])
            )
        await wait_for(conn, "SELECT count(*) >= 1 FROM background_jobs WHERE dedupe_key LIKE 'cron:%'")
        await wait_for(conn, "SELECT bool_and(status = 'completed') FROM background_jobs")
    await _assert_one_job_per_tick(conn)
    assert await conn.fetchval("SELECT version FROM jobrunner_schedules") == 1


async def test_daemon_processes_fire_the_current_tick_once(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    logs = [tmp_path / f"proc-{i}.log" for i in range(3)]
    procs = []
    for i, log in enumerate(logs):
        with log.open("wb") as stderr:
            procs.append(
                jobrunner_process(
                    db_url,
                    "run",
                    "--handlers",
                    "tests.process_handlers",
                    env={"JOBRUNNER_WORKER_ID": f"proc-{i}"},
                    stderr=stderr,
                )
            )
    try:
        await wait_until(lambda: all('"daemon started"' in log.read_text() for log in logs), timeout=60)
        # all three run; now a schedule appears whose current tick is due: they race for it at
        # their next check (they follow the database's schedules, declared or not)
        tick = Schedule(name="noop_every_minute", cron="* * * * *", job_type="noop")
        db_now: datetime = await conn.fetchval("SELECT now()")
        await ScheduleTable(conn, "public").register([tick], "setup", now=db_now - timedelta(minutes=2))
        await wait_for(conn, "SELECT count(*) >= 1 FROM background_jobs WHERE status = 'completed'", timeout=60)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(asyncio.to_thread(proc.wait, 30) for proc in procs))
    assert codes == [0, 0, 0]
    await _assert_one_job_per_tick(conn)
    # each process says which tick it fired: together, one line per job
    fired = sum(log.read_text().count('"schedule tick enqueued"') for log in logs)
    assert fired == await conn.fetchval("SELECT count(*) FROM background_jobs")


async def _assert_one_job_per_tick(conn: asyncpg.Connection) -> None:
    # a minute boundary may pass while the test runs: then two ticks, each once
    counts = await conn.fetch(
        "SELECT dedupe_key, count(*) AS jobs FROM background_jobs GROUP BY dedupe_key ORDER BY dedupe_key"
    )
    assert counts and all(r["jobs"] == 1 for r in counts), counts
    assert all(r["dedupe_key"].startswith("cron:") for r in counts)


# -- missed ticks and new schedules ----------------------------------------------------------


@pytest.mark.parametrize("missed", ["run_once", "skip"])
async def test_ticks_missed_while_no_daemon_ran(conn: asyncpg.Connection, missed: str) -> None:
    hourly = Schedule(name="hourly", cron="0 * * * *", job_type="cron_probe", missed=missed)  # type: ignore[arg-type]
    scheduler = service(conn, hourly)
    await scheduler.register(now=datetime(2025, 1, 6, 9, 30, tzinfo=UTC))
    # nobody ran from 09:30 to 12:20: ticks 10:00, 11:00, 12:00 were missed
    fired = await scheduler.enqueue_due(now=datetime(2025, 1, 6, 12, 20, tzinfo=UTC))
    assert [(f.tick, f.late) for f in fired] == [(datetime(2025, 1, 6, 12, tzinfo=UTC), True)]
    jobs = await schedule_jobs(conn)
    if missed == "run_once":
        assert [j["dedupe_key"] for j in jobs] == ["cron:hourly:2025-01-06T12:00:00+00:00"]
        assert fired[0].job_id == jobs[0]["id"]
    else:
        assert jobs == [] and fired[0].job_id is None
    # either way the next on-time tick fires normally, once
    fired = await scheduler.enqueue_due(now=datetime(2025, 1, 6, 13, 0, 1, tzinfo=UTC))
    assert [(f.tick, f.late) for f in fired] == [(datetime(2025, 1, 6, 13, tzinfo=UTC), False)]
    assert len(await schedule_jobs(conn)) == (2 if missed == "run_once" else 1)


async def test_default_policy_is_run_once() -> None:
    assert EVERY_MINUTE.missed == "run_once"


async def test_a_new_schedule_does_not_backfill(conn: asyncpg.Connection) -> None:
    daily = Schedule(name="daily", cron="0 2 * * *", job_type="cron_probe")
    scheduler = service(conn, EVERY_MINUTE, daily)
    await scheduler.register(now=T0)  # 10:00:30: today's 02:00 and 10:00 are before it existed
    assert await scheduler.enqueue_due(now=T0 + timedelta(seconds=20)) == []
    fired = await scheduler.enqueue_due(now=T0 + timedelta(seconds=30, milliseconds=200))
    assert [(f.name, f.tick) for f in fired] == [("every_minute", T0 + timedelta(seconds=30))]
    assert len(await schedule_jobs(conn)) == 1


# -- time zones and DST -----------------------------------------------------------------------


async def _walk(scheduler: SchedulerService, start: datetime, hours: int) -> list[datetime]:
    """Check every 10 minutes for `hours`; the ticks that fired."""
    ticks: list[datetime] = []
    for step in range(hours * 6 + 1):
        ticks += [f.tick for f in await scheduler.enqueue_due(now=start + timedelta(minutes=10 * step))]
    return ticks


async def test_daily_schedule_fires_once_on_both_dst_days(conn: asyncpg.Connection) -> None:
    nightly = Schedule(name="nightly", cron="30 2 * * *", timezone="Europe/Berlin", job_type="cron_probe")
    scheduler = service(conn, nightly, grace=15 * 60)
    # autumn: 02:30 happens twice on 26 October (CEST, then CET); it fires once, at the first
    await scheduler.register(now=datetime(2025, 10, 25, 12, tzinfo=BERLIN))
    ticks = await _walk(scheduler, datetime(2025, 10, 25, 12, tzinfo=BERLIN), 48)
    assert ticks == [
        datetime(2025, 10, 26, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2025, 10, 27, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]
    # spring: 02:30 does not exist on 30 March; it fires once, at the first time that does
    await conn.execute("DELETE FROM jobrunner_schedules")
    await scheduler.register(now=datetime(2025, 3, 29, 12, tzinfo=BERLIN))
    ticks = await _walk(scheduler, datetime(2025, 3, 29, 12, tzinfo=BERLIN), 48)
    assert ticks == [
        datetime(2025, 3, 30, 1, 0, tzinfo=UTC),  # 03:00 CEST, the first wall time after the gap
        datetime(2025, 3, 31, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]
    assert len(await schedule_jobs(conn)) == 4


def test_hour_wildcard_schedule_fires_every_real_half_hour_across_fall_back() -> None:
    half_hourly = Schedule(name="half", cron="*/30 * * * *", timezone="Europe/Berlin", job_type="x")
    tick = datetime(2025, 10, 25, 23, 0, tzinfo=UTC)  # 01:00 CEST
    ticks = []
    for _ in range(6):
        tick = half_hourly.next_tick(tick)
        ticks.append(tick)
    assert [t - ticks[0] for t in ticks] == [timedelta(minutes=30 * i) for i in range(6)]


# -- changed definitions ---------------------------------------------------------------------


async def test_a_changed_definition_is_written_at_start_and_then_followed_by_all(db_url: str) -> None:
    old = Schedule(name="stats", cron="0 * * * *", job_type="refresh_stats")
    new = Schedule(name="stats", cron="* * * * *", job_type="refresh_stats", priority=5, queue="reports")
    async with _connection(db_url) as conn_a, _connection(db_url) as conn_b:
        replica_a, replica_b = service(conn_a, old, holder="a"), service(conn_b, new, holder="b")
        assert await replica_a.register(now=T0) == ["stats"]
        assert await replica_b.register(now=T0) == ["stats"]  # b started later, with a new config: it wins
        with structlog.testing.capture_logs() as logs:
            fired: list[tuple[str, datetime]] = []
            for minute in range(1, 6):  # five minutes of both replicas checking, in turn and at once
                now = T0 + timedelta(minutes=minute)
                results = await asyncio.gather(replica_a.enqueue_due(now=now), replica_b.enqueue_due(now=now))
                fired += [("a", f.tick) for f in results[0]] + [("b", f.tick) for f in results[1]]
        # every minute fired (the database's cron, not a's hourly one), each once
        assert sorted(t for _, t in fired) == [T0.replace(second=0) + timedelta(minutes=m) for m in range(1, 6)]
        jobs = await schedule_jobs(conn_a)
        assert len(jobs) == 5 and {(j["queue"], j["priority"]) for j in jobs} == {("reports", 5)}
        # nobody rewrote the row while running, and a warned once, not once per check
        assert await conn_a.fetchval("SELECT version FROM jobrunner_schedules") == 2
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert len(warnings) == 1 and warnings[0]["schedule"] == "stats"
        assert warnings[0]["declared"]["cron"] == "0 * * * *" and warnings[0]["database"]["cron"] == "* * * * *"


async def test_a_tick_computed_from_a_replaced_definition_does_not_fire(conn: asyncpg.Connection) -> None:
    table = ScheduleTable(conn, "public")
    await table.register([EVERY_MINUTE], "a", now=T0)
    _, [stale] = await table.rows()
    await table.register([EVERY_MINUTE.model_copy(update={"job_type": "other"})], "b")
    due = EVERY_MINUTE.due(stale.handled_until, T0 + timedelta(minutes=1), timedelta(minutes=1))
    assert due is not None
    assert await table.fire(stale, EVERY_MINUTE, due) == (False, None)
    assert await schedule_jobs(conn) == []


# -- declarations ----------------------------------------------------------------------------


def test_schedules_from_settings_file_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[[schedules]]\nname = "cache_cleanup"\ncron = "0 2 * * *"\njob_type = "cleanup_cache"\n'
        'timezone = "Europe/Berlin"\nmissed = "skip"\n[schedules.payload]\nolder_than_days = 7\n'
    )
    settings = make_settings("postgresql://unused/db", schedules=[EVERY_MINUTE], schedules_file=path)
    declared = declared_schedules(settings, entry_point_group=None)
    assert sorted(declared) == ["cache_cleanup", "every_minute"]
    assert declared["cache_cleanup"].payload == {"older_than_days": 7}
    assert load_schedules_file(path)[0].missed == "skip"
    clash = make_settings(
        "postgresql://unused/db",
        schedules=[EVERY_MINUTE],
        schedules_file=_json_file(tmp_path, [{**EVERY_MINUTE.model_dump(), "queue": "q"}]),
    )
    with pytest.raises(ScheduleError, match="declared differently"):
        declared_schedules(clash, entry_point_group=None)
    for bad in ({"cron": "* * * * * *"}, {"cron": "61 * * * *"}, {"timezone": "Mars/Olympus"}, {"missed": "all"}):
        with pytest.raises(ValidationError):
            Schedule.model_validate({**EVERY_MINUTE.model_dump(), **bad})


def _json_file(directory: Path, data: object) -> Path:
    path = directory / "more.json"
    path.write_text(json.dumps(data))
    return path


# -- the CLI ---------------------------------------------------------------------------------


async def test_cli_lists_schedules_with_last_and_next_run(db_url: str, conn: asyncpg.Connection) -> None:
    db_now: datetime = await conn.fetchval("SELECT now()")
    scheduler = service(conn, EVERY_MINUTE)
    await scheduler.register(now=db_now - timedelta(minutes=3))
    [fired] = await scheduler.enqueue_due()
    pending = Schedule(name="weekly_metrics", cron="0 3 * * 0", job_type="cleanup_metrics")
    env = {"JOBRUNNER_SCHEDULES": json.dumps([s.model_dump(mode="json") for s in (EVERY_MINUTE, pending)])}

    listed = json.loads(await _cli(db_url, env, "schedules", "--json"))
    by_name = {item["name"]: item for item in listed}
    assert by_name["every_minute"]["last_job_id"] == fired.job_id
    assert datetime.fromisoformat(by_name["every_minute"]["last_tick"]) == fired.tick
    assert datetime.fromisoformat(by_name["every_minute"]["next_run"]) > fired.tick
    assert by_name["every_minute"]["declared_here"] is True
    assert by_name["weekly_metrics"]["declared_here"] == "not registered yet"
    assert datetime.fromisoformat(by_name["weekly_metrics"]["next_run"]).weekday() == 6  # a Sunday

    text = await _cli(db_url, env, "schedules")
    assert "every_minute" in text and "weekly_metrics" in text and "* * * * *" in text


async def _cli(db_url: str, env: dict[str, str], *args: str) -> str:
    proc = jobrunner_process(
        db_url, *args, env={**env, "COLUMNS": "250"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@asynccontextmanager
async def _connection(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()
