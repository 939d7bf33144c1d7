"""The statements on `jobrunner_schedules` (jobrunner.schedules.ScheduleTable runs them), each
defined once for both drivers (jobrunner.statements)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jobrunner.sql_files import Queries
from jobrunner.statements import Returns, Row, Statement


class ScheduleStatements:
    """The statements for one schema: `ScheduleStatements("public").remove("nightly")`."""

    __slots__ = ("queries",)

    def __init__(self, schema: str) -> None:
        self.queries = Queries(schema)

    def register(
        self, name: str, definition: dict[str, Any], now: datetime | None, updated_by: str
    ) -> Statement[int | None]:
        """Write one definition: its new version, or None when the row already held it."""
        return Statement(self.queries.register_schedule, (name, json.dumps(definition), now, updated_by), Returns.VALUE)

    def list_schedules(self) -> Statement[list[Row]]:
        """Every schedule's row with the database's clock (`db_now`); one row with a null name
        when there is no schedule, so the clock is always read."""
        return Statement(self.queries.list_schedules, (), Returns.ROWS)

    def remove(self, name: str) -> Statement[bool]:
        """True when the schedule was there."""
        return Statement(self.queries.remove_schedule, (name,), Returns.VALUE, _found)

    def advance_tick(self, name: str, tick: datetime, version: int) -> Statement[bool]:
        """Move the schedule's tick to `tick` if it is still at `version` and behind it: True
        when this caller won the tick."""
        return Statement(self.queries.advance_schedule_tick, (name, tick, version), Returns.VALUE, _found)

    def enqueue_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue: str,
        priority: int,
        max_attempts: int,
        dedupe_key: str | None,
    ) -> Statement[int]:
        """A schedule's job: its id (the live job's when the dedupe key is taken; the dashboard's
        "run now" gives none)."""
        return Statement(
            self.queries.enqueue_scheduled_job,
            (job_type, json.dumps(payload), queue, priority, max_attempts, dedupe_key),
            Returns.VALUE,
        )

    def record_job(self, name: str, job_id: int) -> Statement[None]:
        """Note the tick's job on the schedule's row."""
        return Statement(self.queries.record_schedule_job, (name, job_id), Returns.NOTHING, _nothing)


def _found(name: str | None) -> bool:
    return name is not None


def _nothing(_result: object) -> None:
    return None
