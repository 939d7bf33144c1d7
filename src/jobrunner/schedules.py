"""Cron schedules: what a schedule is, which tick is due, where schedules are declared, and the
table that makes one tick one job however many replicas run.

The rule that keeps replicas with different configurations from fighting: a replica writes its
declared definitions to `jobrunner_schedules` once, when it starts (last starter wins), and from
then on computes every tick from the row's definition, which all replicas read. A replica whose
own declaration differs from the row logs a warning once and follows the database.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobrunner.plugin_entry_points import declared_objects
from jobrunner.schedule_statements import ScheduleStatements
from jobrunner.statements import run

if TYPE_CHECKING:
    from jobrunner.settings import Settings

SCHEDULES_ENTRY_POINT_GROUP = "jobrunner.schedules"

# run_once: ticks missed while no daemon ran become one job when one runs again (the default: a
# weekly cleanup missed during a deploy should not wait a week); skip: they are dropped.
MissedTickPolicy = Literal["run_once", "skip"]


class ScheduleError(RuntimeError):
    pass


class Schedule(BaseModel):
    """One cron schedule: every tick of `cron` in `timezone` enqueues one `job_type` job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(description="5 fields: minute hour day-of-month month day-of-week")
    job_type: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", description="IANA zone the cron fields are read in")
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    queue: str = Field(default="default", min_length=1, max_length=200)
    max_attempts: int = Field(default=5, ge=1, le=1000)
    missed: MissedTickPolicy = "run_once"

    @field_validator("cron")
    @classmethod
    def _five_field_cron(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value.split(" ")) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def definition(self) -> dict[str, Any]:
        """What the database row holds (everything but the name, which is its key)."""
        return self.model_dump(mode="json", exclude={"name"})

    @classmethod
    def from_definition(cls, name: str, definition: dict[str, Any]) -> Schedule:
        return cls.model_validate({**definition, "name": name})

    # -- ticks ---------------------------------------------------------------------------
    # croniter walks wall-clock time in the zone, aware datetimes in, aware datetimes out.
    # Spring forward: a wall time that does not exist fires at the first one that does. Fall
    # back: a wall time that happens twice fires once for fixed-hour expressions ("30 2 * * *"),
    # as cron does, but every real hour for hour-wildcard ones ("*/30 * * * *").

    def _counts(self, tick: datetime) -> bool:
        repeated = tick.fold == 1 and tick.replace(fold=0).utcoffset() != tick.utcoffset()
        return not repeated or self.cron.split(" ")[1].startswith("*")

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after `after` (UTC)."""
        ticks = croniter(self.cron, after.astimezone(self.zone))
        while not self._counts(tick := ticks.get_next(datetime)):
            pass
        return tick.astimezone(UTC)

    def latest_tick(self, at: datetime) -> datetime:
        """The last tick at or before `at` (UTC)."""
        # get_prev is strict; a microsecond later makes a tick exactly at `at` count
        ticks = croniter(self.cron, (at + timedelta(microseconds=1)).astimezone(self.zone))
        while not self._counts(tick := ticks.get_prev(datetime)):
            pass
        return tick.astimezone(UTC)

    def due(self, after: datetime, now: datetime, grace: timedelta) -> Due | None:
        """What to do at `now` when every tick up to `after` is handled; None: nothing yet.

        Any number of ticks in (after, now] collapse into the latest. Found within `grace` of
        its time it is on time and fires; later it was missed while no daemon ran, and the
        missed policy says whether it still fires once (run_once) or is only marked handled.
        """
        if self.next_tick(after) > now:
            return None
        tick = self.latest_tick(now)
        late = now - tick > grace
        return Due(tick=tick, enqueue=not late or self.missed == "run_once", late=late)

    def dedupe_key(self, tick: datetime) -> str:
        return f"cron:{self.name}:{tick.astimezone(UTC).isoformat()}"


@dataclass(frozen=True, slots=True)
class Due:
    tick: datetime
    enqueue: bool  # False: a missed tick under `skip`, marked handled without a job
    late: bool


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as the database has it: the definition every replica follows."""

    name: str
    definition: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str | None
    last_tick: datetime | None
    last_fired_at: datetime | None
    last_job_id: int | None

    @property
    def handled_until(self) -> datetime:
        return self.last_tick or self.created_at

    def schedule(self) -> Schedule:
        """Raises ValidationError when the row holds what this version cannot run."""
        return Schedule.from_definition(self.name, self.definition)


# -- where schedules are declared ---------------------------------------------------------


def load_schedules_file(path: Path) -> list[Schedule]:
    """A TOML file of `[[schedules]]` tables, or a JSON list (or `{"schedules": [...]}`)."""
    try:
        text = path.read_text()
        data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ScheduleError(f"cannot read schedules file {path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("schedules", [])
    if not isinstance(data, list):
        raise ScheduleError(f"schedules file {path} holds no list of schedules")
    try:
        return [Schedule.model_validate(item) for item in data]
    except ValidationError as exc:
        raise ScheduleError(f"invalid schedule in {path}: {exc}") from exc


def entry_point_schedules(group: str = SCHEDULES_ENTRY_POINT_GROUP) -> list[tuple[Schedule, str]]:
    return declared_objects(group, Schedule, ScheduleError)


def declared_schedules(
    settings: Settings, *, entry_point_group: str | None = SCHEDULES_ENTRY_POINT_GROUP
) -> dict[str, Schedule]:
    """This replica's schedules: settings, the schedules file, then plugins. A name declared
    twice with different definitions is an error; the same definition twice is fine."""
    sources: list[tuple[Schedule, str]] = [(item, "settings (JOBRUNNER_SCHEDULES)") for item in settings.schedules]
    if settings.schedules_file is not None:
        origin = f"schedules file {settings.schedules_file}"
        sources += [(item, origin) for item in load_schedules_file(settings.schedules_file)]
    if entry_point_group and settings.plugin_schedules:
        sources += entry_point_schedules(entry_point_group)
    declared: dict[str, Schedule] = {}
    origins: dict[str, str] = {}
    for item, origin in sources:
        existing = declared.get(item.name)
        if existing is not None and existing != item:
            raise ScheduleError(f"schedule {item.name!r} is declared differently by {origins[item.name]} and {origin}")
        declared[item.name] = item
        origins.setdefault(item.name, origin)
    return declared


# -- the table ------------------------------------------------------------------------------


class ScheduleTable:
    """`jobrunner_schedules`: registration, reading, and firing a tick atomically."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, schema: str) -> None:
        self._db = pool
        self.statements = ScheduleStatements(schema)

    async def register(
        self, schedules: Iterable[Schedule], updated_by: str, *, now: datetime | None = None
    ) -> list[str]:
        """Write these definitions (called once, when a replica starts); returns the names whose
        row was created or changed."""
        written: list[str] = []
        for item in schedules:
            version = await run(self._db, self.statements.register(item.name, item.definition(), now, updated_by))
            if version is not None:
                written.append(item.name)
        return written

    async def rows(self) -> tuple[datetime, list[ScheduleRow]]:
        """The database's clock and every schedule."""
        records = await run(self._db, self.statements.list_schedules())
        rows = [
            ScheduleRow(
                name=r["name"],
                definition=json.loads(r["definition"]),
                version=r["version"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                updated_by=r["updated_by"],
                last_tick=r["last_tick"],
                last_fired_at=r["last_fired_at"],
                last_job_id=r["last_job_id"],
            )
            for r in records
            if r["name"] is not None
        ]
        db_now: datetime = records[0]["db_now"]
        return db_now, rows

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection | PoolConnectionProxy]:
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn:
                yield conn
        else:
            yield self._db

    async def remove(self, name: str) -> bool:
        return await run(self._db, self.statements.remove(name))

    async def fire(self, row: ScheduleRow, schedule: Schedule, due: Due) -> tuple[bool, int | None]:
        """Handle `due` unless another replica did: (won, job id). The tick moves forward and the
        job is inserted in one transaction; the dedupe key is a second guard."""
        async with self._connection() as conn, conn.transaction():
            if not await run(conn, self.statements.advance_tick(row.name, due.tick, row.version)):
                return False, None
            if not due.enqueue:
                return True, None
            job_id = await run(
                conn,
                self.statements.enqueue_job(
                    schedule.job_type,
                    schedule.payload,
                    schedule.queue,
                    schedule.priority,
                    schedule.max_attempts,
                    schedule.dedupe_key(due.tick),
                ),
            )
            await run(conn, self.statements.record_job(row.name, job_id))
            return True, job_id
