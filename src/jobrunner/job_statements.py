"""The statements on background_jobs that applications and the commands run (enqueue, read,
cancel, retry, status), each defined once for both drivers (jobrunner.statements): the clients
(`AsyncClient`, `Client`), the CLI and the demo run these, never a query of their own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobrunner.flows import OnParentFailure, ParentJob, dependent_args
from jobrunner.new_job import ValidatedJob, bulk_columns
from jobrunner.sql_files import Queries
from jobrunner.statements import Returns, Row, Statement

# the jsonb columns of a record: read as text (one decoder for both drivers), given as Python values
_JSON_FIELDS = ("payload", "result", "progress")


@dataclass(frozen=True)
class JobRecord:
    """A row of background_jobs as `get` returns it. `payload`, `result` and `progress` are
    Python values decoded from their JSON (a dict; any JSON value or None)."""

    id: int
    job_type: str
    queue: str
    payload: dict[str, Any]
    priority: int
    status: str
    attempts: int
    max_attempts: int
    scheduled_at: datetime
    dedupe_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    worker_id: str | None
    last_error: str | None
    last_error_traceback: str | None
    result: Any
    release_count: int
    cancel_requested_at: datetime | None
    progress: Any
    concurrency_key: str | None
    # job flows (jobrunner.flows): the jobs this one waits for, how many of them have not
    # finished, how many ended without completing, and what such a parent does to this job;
    # None for a job without parents
    depends_on: list[int] | None
    waiting_on: int | None
    parents_failed: int | None
    on_parent_failure: str | None
    # how often its handler snoozed (raised Snooze): each gave the attempt back
    snoozes: int

    @classmethod
    def from_row(cls, row: Row) -> JobRecord:
        fields = {name: row[name] for name in cls.__dataclass_fields__}
        for name in _JSON_FIELDS:
            if fields[name] is not None:
                fields[name] = json.loads(fields[name])
        if fields["depends_on"] is not None:
            fields["depends_on"] = list(fields["depends_on"])
        return cls(**fields)


def _record_or_none(row: Row | None) -> JobRecord | None:
    return None if row is None else JobRecord.from_row(row)


def _parent_jobs(rows: list[Row]) -> list[ParentJob]:
    return [ParentJob.from_row(row) for row in rows]


def _ids(value: list[int] | None) -> list[int]:
    return value or []


class JobStatements:
    """The statements for one schema: `JobStatements("public").get_job(42)` is a Statement to
    give to `run` or `run_sync`."""

    __slots__ = ("queries",)

    def __init__(self, schema: str) -> None:
        self.queries = Queries(schema)

    def enqueue(self, job: ValidatedJob) -> Statement[int]:
        """The job's id (the live job's when its dedupe_key is taken)."""
        return Statement(self.queries.enqueue, job, Returns.VALUE)

    def enqueue_batch(self, jobs: Sequence[ValidatedJob]) -> Statement[list[int]]:
        """The ids inserted, in the order of `jobs` (dedupe hits are skipped)."""
        return Statement(self.queries.enqueue_batch, bulk_columns(jobs), Returns.VALUE, _ids)

    def enqueue_dependent(
        self, job: ValidatedJob, parents: list[int], on_parent_failure: OnParentFailure
    ) -> Statement[int]:
        """A job that waits for `parents` (jobrunner.flows): its id."""
        return Statement(self.queries.enqueue_dependent, dependent_args(job, parents, on_parent_failure), Returns.VALUE)

    def parent_jobs(self, job_id: int) -> Statement[list[ParentJob]]:
        """The jobs `job_id` depends on, by id, with their status and result."""
        return Statement(self.queries.parent_jobs, (job_id,), Returns.ROWS, _parent_jobs)

    def flow_parent_counts(self, job_id: int) -> Statement[list[Row]]:
        """(status, jobs, first_ids) rows: how a dependent's parents stand."""
        return Statement(self.queries.flow_parent_counts, (job_id,), Returns.ROWS)

    def flow_waiting_dependents(self, job_id: int, limit: int) -> Statement[list[Row]]:
        """(id, job_type, status) rows: the first `limit` jobs waiting for this one."""
        return Statement(self.queries.flow_waiting_dependents, (job_id, limit), Returns.ROWS)

    def get_job(self, job_id: int) -> Statement[JobRecord | None]:
        return Statement(self.queries.get_job, (job_id,), Returns.ROW, _record_or_none)

    def cancel_job(self, job_id: int) -> Statement[str | None]:
        """The job's status after the request; None when there is no such job."""
        return Statement(self.queries.cancel_job, (job_id,), Returns.VALUE)

    def cancel_job_reporting(self, job_id: int) -> Statement[Row | None]:
        """cancel_job with the job's state before it (status_before, cancel_requested_before,
        finished_at, status_after); None when there is no such job."""
        return Statement(self.queries.cancel_job_reporting, (job_id,), Returns.ROW)

    def retry_job(self, job_id: int) -> Statement[list[Row]]:
        """Give a failed, dead or cancelled job a fresh set of attempts: its (id, queue) row, or
        no row when it is not one of those."""
        return Statement(self.queries.retry_job, (job_id,), Returns.ROWS)

    def retry_all_of_type(self, job_type: str) -> Statement[list[Row]]:
        """Requeue every failed and dead job of `job_type`: one (id, queue) row per job."""
        return Statement(self.queries.retry_all_of_type, (job_type,), Returns.ROWS)

    def notify_queues(self, queues: Sequence[str]) -> Statement[None]:
        """Wake the daemons working `queues` (a NOTIFY, sent when the transaction commits)."""
        return Statement(self.queries.notify_queues, (list(queues),), Returns.NOTHING, _nothing)

    def status_counts(self) -> Statement[list[Row]]:
        """(job_type, status, jobs) rows."""
        return Statement(self.queries.status_counts, (), Returns.ROWS)

    def oldest_runnable(self) -> Statement[list[Row]]:
        """(queue, age_seconds, runnable) rows: each queue's oldest job runnable now."""
        return Statement(self.queries.oldest_runnable, (), Returns.ROWS)

    def recent_dead(self, limit: int) -> Statement[list[Row]]:
        """The latest failed and dead jobs (id, job_type, status, attempts, finished_at, last_error)."""
        return Statement(self.queries.recent_dead, (limit,), Returns.ROWS)


def _nothing(_result: object) -> None:
    return None
