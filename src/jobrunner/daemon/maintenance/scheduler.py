"""The cron scheduler every replica runs: each second or so it reads `jobrunner_schedules` and
fires the ticks that are due. Replicas race for a tick in the database (see
ScheduleTable.fire); the loser updates nothing, so no leader is needed and any replica will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog
from prometheus_client import Counter
from pydantic import ValidationError

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.schedules import Due, Schedule, ScheduleError, ScheduleTable, declared_schedules
from jobrunner.settings import Settings


@dataclass(frozen=True, slots=True)
class Fired:
    """A tick this replica handled: with a job, or skipped as missed (job_id None)."""

    name: str
    tick: datetime
    job_id: int | None
    late: bool


class SchedulerService(PeriodicService):
    def __init__(
        self,
        pool: asyncpg.Pool | asyncpg.Connection,
        schema: str,
        declared: Mapping[str, Schedule],
        holder: str,
        *,
        interval: float = 1.0,
        misfire_grace: float = 60.0,
        log: structlog.typing.FilteringBoundLogger | None = None,
        errors: Counter | None = None,
        clock: Clock | None = None,
    ) -> None:
        log = log or structlog.get_logger("jobrunner").bind(worker_id=holder)
        super().__init__("scheduler", interval, log=log, errors=errors, clock=clock, run_at_start=True)
        self.table = ScheduleTable(pool, schema)
        self.declared = dict(declared)
        self._holder = holder
        self._grace = timedelta(seconds=misfire_grace)
        # (name, version) already warned about: one warning per change, not one per second
        self._warned: set[tuple[str, int]] = set()
        self.registered = False

    @classmethod
    def for_daemon(
        cls,
        pool: asyncpg.Pool,
        settings: Settings,
        holder: str,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
    ) -> SchedulerService:
        try:
            declared = declared_schedules(settings)
        except ScheduleError as exc:
            # the database's schedules still fire; only this replica's declarations are lost
            log.error("schedules not loaded: this replica follows the database's schedules only", error=str(exc))
            declared = {}
        return cls(
            pool,
            settings.schema_name,
            declared,
            holder,
            interval=settings.schedule_interval,
            misfire_grace=settings.schedule_misfire_grace,
            log=log,
            errors=errors,
        )

    async def register(self, *, now: datetime | None = None) -> list[str]:
        """Write this replica's definitions: once, at start (the rule that avoids fights)."""
        written = await self.table.register(self.declared.values(), self._holder, now=now)
        for name in written:
            self.log.info("schedule definition written", schedule=name, **self.declared[name].definition())
        self.registered = True
        return written

    async def enqueue_due(self, *, now: datetime | None = None) -> list[Fired]:
        """Fire every due tick that no other replica fired first. `now` defaults to the
        database's clock."""
        db_now, rows = await self.table.rows()
        now = now or db_now
        fired: list[Fired] = []
        for row in rows:
            try:
                schedule = row.schedule()
            except ValidationError as exc:
                if (row.name, row.version) not in self._warned:
                    self._warned.add((row.name, row.version))
                    self.log.error(
                        "schedule in the database cannot be run by this replica", schedule=row.name, error=str(exc)
                    )
                continue
            self._warn_if_diverged(schedule, row.version)
            due = schedule.due(row.handled_until, now, self._grace)
            if due is None:
                continue
            won, job_id = await self.table.fire(row, schedule, due)
            if won:
                fired.append(Fired(row.name, due.tick, job_id, due.late))
                self._log_fired(schedule, due, job_id)
        return fired

    def _warn_if_diverged(self, schedule: Schedule, version: int) -> None:
        mine = self.declared.get(schedule.name)
        if mine is None or mine == schedule or (schedule.name, version) in self._warned:
            return
        self._warned.add((schedule.name, version))
        self.log.warning(
            "this replica declares schedule differently from the database; following the database "
            "(the last replica to start wrote it)",
            schedule=schedule.name,
            declared=mine.definition(),
            database=schedule.definition(),
        )

    def _log_fired(self, schedule: Schedule, due: Due, job_id: int | None) -> None:
        if job_id is None:
            self.log.info("missed schedule tick skipped", schedule=schedule.name, tick=due.tick.isoformat())
        else:
            self.log.info(
                "schedule tick enqueued",
                schedule=schedule.name,
                tick=due.tick.isoformat(),
                job_id=job_id,
                job_type=schedule.job_type,
                late=due.late,
            )

    async def run_once(self) -> None:
        if not self.registered:
            await self.register()
        await self.enqueue_due()
