"""What the dashboard reads, through the named statements of sql/queries/dashboard.sql.

The expensive figure of the overview, what finished in the last hour and day, is computed at
most once per FINISHED_TTL for every open page together; the live counts (pending, running)
read partial indexes that hold only live rows, so their cost does not grow with the history,
and are reused for a time that grows with what they cost (live_counts).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError

from jobrunner.dashboard.action_statements import ActionStatements
from jobrunner.dashboard.filters import PAGE_SIZE, SCAN_WINDOW, JobFilter
from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.operator_statements import OperatorStatements
from jobrunner.schedule_statements import ScheduleStatements
from jobrunner.schedules import Schedule
from jobrunner.sql_files import Queries

log = structlog.get_logger("jobrunner.dashboard")

HOUR = 3600.0
DAY = 86_400.0
# how long a computed "finished in the last hour / day" figure is shown before it is recomputed
FINISHED_TTL = {HOUR: 10.0, DAY: 60.0}
UNSUCCESSFUL = ("failed", "dead")
# the live counts are reused for this many times what counting them took
LIVE_COST_FACTOR = 20
# a creation-time filter reads this much further on both sides: ids follow the order of inserts,
# created_at the start of the inserting transaction
TIME_MARGIN = timedelta(seconds=60)
# the largest id a cursor may carry (bigint)
NO_CURSOR = 2**63 - 1
# the jobs waiting for a job that its page lists
WAITING_DEPENDENTS_SHOWN = 20


@dataclass
class Throughput:
    """Jobs that finished within a window, by outcome."""

    completed: int = 0
    failed: int = 0  # failed or dead
    cancelled: int = 0

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None

    def add(self, status: str, jobs: int) -> None:
        if status == "completed":
            self.completed += jobs
        elif status in UNSUCCESSFUL:
            self.failed += jobs
        else:
            self.cancelled += jobs


@dataclass
class GroupRow:
    """One queue or job type on the overview."""

    name: str
    pending: int = 0
    runnable: int = 0
    oldest_runnable_seconds: float | None = None
    running: int = 0
    # job flows: waiting for their parents, not runnable yet
    blocked: int = 0
    hour: Throughput = field(default_factory=Throughput)
    day: Throughput = field(default_factory=Throughput)
    paused: asyncpg.Record | None = None


@dataclass
class Overview:
    queues: list[GroupRow]
    types: list[GroupRow]
    limits: list[asyncpg.Record]
    workers: list[asyncpg.Record]
    finished_as_of: float


@dataclass
class JobsPage:
    rows: list[asyncpg.Record]
    # the cursor of the next (older) page, when there is one
    next_cursor: int | None
    # a page that stopped at its scan window: the ids below `searched_to` were not looked at
    searched_to: int | None


@dataclass
class ScheduleView:
    name: str
    schedule: Schedule | None
    problem: str | None
    last_tick: datetime | None
    last_job_id: int | None
    last_job_status: str | None
    next_tick: datetime | None


@dataclass
class _Cached:
    rows: list[asyncpg.Record]
    at: float


@dataclass
class _Live:
    rows: tuple[list[asyncpg.Record], list[asyncpg.Record]]
    # reused until then
    at: float


class DashboardStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, *, live_min_age: float = 0.0) -> None:
        self.pool = pool
        self.schema = schema
        self.queries = Queries(schema)
        # the statements the dashboard shares with the CLI and the scheduler
        self.action_statements = ActionStatements(schema)
        self.operator = OperatorStatements(schema)
        self.schedule_statements = ScheduleStatements(schema)
        self.live_min_age = live_min_age
        self._finished: dict[float, _Cached] = {}
        self._finished_lock = asyncio.Lock()
        self._recounting: dict[float, asyncio.Task[None]] = {}
        self._live: _Live | None = None
        self._seen_queues: set[str] = set()
        self._seen_types: set[str] = set()
        self._live_lock = asyncio.Lock()

    async def schema_ready(self) -> bool:
        return bool(await self.pool.fetchval(self.queries.dashboard_schema_ready))

    # -- the overview ------------------------------------------------------------------------

    async def finished_since(self, seconds: float) -> _Cached:
        """What finished in the last `seconds`. Counted at most once per FINISHED_TTL: a page
        asking later gets the last count at once while a new one is made in the background (a
        day of 1,000,000 jobs takes about a second to count); only the first count is waited for."""
        cached = self._finished.get(seconds)
        if cached is None:
            async with self._finished_lock:
                cached = self._finished.get(seconds)
                if cached is None:
                    cached = await self._count_finished(seconds)
            return cached
        stale = time.monotonic() - cached.at >= FINISHED_TTL[seconds]
        if stale and (seconds not in self._recounting or self._recounting[seconds].done()):
            self._recounting[seconds] = asyncio.create_task(self._recount_finished(seconds))
        return cached

    async def _recount_finished(self, seconds: float) -> None:
        try:
            await self._count_finished(seconds)
        except TRANSIENT_ERRORS as exc:  # the last count stays; the next page asks again
            log.warning("dashboard could not count finished jobs", error=repr(exc))

    async def close(self) -> None:
        for task in self._recounting.values():
            task.cancel()
        await asyncio.gather(*self._recounting.values(), return_exceptions=True)

    async def _count_finished(self, seconds: float) -> _Cached:
        rows = await self.pool.fetch(self.queries.dashboard_finished_since, seconds)
        cached = self._finished[seconds] = _Cached(rows, time.monotonic())
        return cached

    async def live_counts(self) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        """Pending and running jobs by queue and by job type. Counting a large backlog costs (a
        100,000-job backlog: about 0.1 s a query here), so the figures are reused for
        LIVE_COST_FACTOR times what they took to count, and at least half a refresh interval:
        however large the backlog and however many pages are open, the dashboard spends at most
        about 1/LIVE_COST_FACTOR of one connection's time on them."""
        cached = self._live
        if cached is not None and time.monotonic() < cached.at:
            return cached.rows
        async with self._live_lock:
            cached = self._live
            if cached is None or time.monotonic() >= cached.at:
                started = time.monotonic()
                rows = (
                    await self.pool.fetch(self.queries.dashboard_queue_live),
                    await self.pool.fetch(self.queries.dashboard_type_live),
                )
                took = time.monotonic() - started
                cached = self._live = _Live(rows, time.monotonic() + max(self.live_min_age, LIVE_COST_FACTOR * took))
            return cached.rows

    @property
    def live_reused_until(self) -> float:
        """Until when (time.monotonic) the live counts last made are reused; 0 when none were."""
        return self._live.at if self._live is not None else 0.0

    async def overview(self) -> Overview:
        queue_live, type_live = await self.live_counts()
        pauses = {row["queue"]: row for row in await self.pool.fetch(self.queries.queue_pauses)}
        hour = await self.finished_since(HOUR)
        day = await self.finished_since(DAY)
        limits = await self.pool.fetch(self.queries.dashboard_limits)
        workers = await self.pool.fetch(self.queries.dashboard_workers)

        queues: dict[str, GroupRow] = {}
        types: dict[str, GroupRow] = {}
        for by, live, key in ((queues, queue_live, "queue"), (types, type_live, "job_type")):
            for row in live:
                by[row[key]] = GroupRow(
                    row[key],
                    row["pending"],
                    row["runnable"],
                    row["oldest_runnable_seconds"],
                    row["running"],
                    row["blocked"],
                )
        for window, cached in (("hour", hour), ("day", day)):
            for row in cached.rows:
                for by, key in ((queues, "queue"), (types, "job_type")):
                    group = by.setdefault(row[key], GroupRow(row[key]))
                    getattr(group, window).add(row["status"], row["jobs"])
        for name, pause in pauses.items():
            queues.setdefault(name, GroupRow(name)).paused = pause
        # a queue or type whose last jobs just finished has no live row and is not yet in the
        # finished counts (recounted every 10 s): it stays listed rather than blink out
        for by, seen in ((queues, self._seen_queues), (types, self._seen_types)):
            seen.update(by)
            for name in seen - by.keys():
                by[name] = GroupRow(name)
        return Overview(
            queues=[queues[name] for name in sorted(queues)],
            types=[types[name] for name in sorted(types)],
            limits=list(limits),
            workers=list(workers),
            finished_as_of=min(hour.at, day.at),
        )

    # -- jobs --------------------------------------------------------------------------------

    async def id_bounds(self) -> tuple[int | None, int | None]:
        row = await self.pool.fetchrow(self.queries.dashboard_id_bounds)
        assert row is not None
        return row["lowest"], row["highest"]

    async def first_id_created_at(self, moment: datetime) -> int | None:
        found: int | None = await self.pool.fetchval(self.queries.dashboard_first_id_created_at, moment)
        return found

    async def jobs_page(self, job_filter: JobFilter, cursor: int | None) -> JobsPage:
        """One page, newest first, below `cursor`. A creation-time range is turned into a range
        of ids first (a binary search over the primary key, with a margin of TIME_MARGIN for jobs
        of transactions that began earlier). Then a filter that no index bounds reads at most
        SCAN_WINDOW ids: when the window ends before the page is full, the page says where it
        stopped and the next one starts there."""
        below = cursor if cursor is not None else NO_CURSOR
        time_floor = 0
        if job_filter.created_before is not None and cursor is None:
            start = await self.first_id_created_at(job_filter.created_before + TIME_MARGIN)
            if start is not None:
                below = start
        if job_filter.created_from is not None:
            first = await self.first_id_created_at(job_filter.created_from - TIME_MARGIN)
            if first is None:
                return JobsPage([], None, None)
            time_floor = first
        floor = time_floor
        windowed = False
        if not job_filter.index_bounded:
            lowest, highest = await self.id_bounds()
            if highest is None or lowest is None:
                return JobsPage([], None, None)
            below = min(below, highest + 1)
            if below - SCAN_WINDOW > max(time_floor, lowest):
                floor, windowed = below - SCAN_WINDOW, True
        rows = await self.pool.fetch(
            self.queries.dashboard_jobs_page, below, floor, *job_filter.sql_args(), PAGE_SIZE + 1
        )
        if len(rows) > PAGE_SIZE:
            return JobsPage(rows[:PAGE_SIZE], rows[PAGE_SIZE - 1]["id"], None)
        if windowed:
            return JobsPage(list(rows), floor, floor)
        return JobsPage(list(rows), None, None)

    async def job(self, job_id: int) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(self.queries.get_job, job_id)
        return row

    async def job_flow(self, job: asyncpg.Record) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        """A job's place in a flow: its parents counted by status (with their first ids), and the
        first jobs waiting for it (sql/queries/flows.sql)."""
        parents = await self.pool.fetch(self.queries.flow_parent_counts, job["id"]) if job["depends_on"] else []
        waiting = await self.pool.fetch(self.queries.flow_waiting_dependents, job["id"], WAITING_DEPENDENTS_SHOWN)
        return list(parents), list(waiting)

    # -- schedules and the audit trail ------------------------------------------------------

    async def schedules(self) -> tuple[datetime, list[ScheduleView]]:
        records = await self.pool.fetch(self.queries.dashboard_schedules)
        now: datetime = records[0]["db_now"]
        return now, [_schedule_view(row, now) for row in records if row["name"] is not None]

    async def schedule(self, name: str) -> Schedule | None:
        row = await self.pool.fetchrow(self.queries.dashboard_schedule, name)
        if row is None:
            return None
        return Schedule.from_definition(row["name"], json.loads(row["definition"]))

    async def audit_page(self, cursor: int | None) -> tuple[list[asyncpg.Record], int | None]:
        rows = await self.pool.fetch(
            self.queries.dashboard_audit_page, cursor if cursor is not None else NO_CURSOR, PAGE_SIZE + 1
        )
        if len(rows) > PAGE_SIZE:
            return list(rows[:PAGE_SIZE]), rows[PAGE_SIZE - 1]["id"]
        return list(rows), None

    async def audit_entry(self, audit_id: int) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(self.queries.dashboard_audit_entry, audit_id)
        return row

    async def change_marker(self) -> str:
        marker: str = await self.pool.fetchval(self.queries.dashboard_change_marker)
        return marker


def _schedule_view(row: asyncpg.Record, now: datetime) -> ScheduleView:
    schedule: Schedule | None = None
    problem: str | None = None
    next_tick: datetime | None = None
    try:
        schedule = Schedule.from_definition(row["name"], json.loads(row["definition"]))
        # a due tick fires at the next check of any running daemon
        after = row["last_tick"] or now
        next_tick = schedule.next_tick(after) if row["last_tick"] else schedule.next_tick(now)
        if next_tick < now - timedelta(seconds=1):
            next_tick = now
    except (ValidationError, ValueError) as exc:
        problem = f"cannot be read: {exc}"
    return ScheduleView(
        name=row["name"],
        schedule=schedule,
        problem=problem,
        last_tick=row["last_tick"],
        last_job_id=row["last_job_id"],
        last_job_status=row["last_job_status"],
        next_tick=next_tick,
    )


def queues_of(rows: Iterable[asyncpg.Record]) -> list[str]:
    return sorted({row["queue"] for row in rows})


def ids_of(rows: Sequence[Any]) -> list[int]:
    return [row["id"] for row in rows]
