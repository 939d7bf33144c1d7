"""Job flows from Python: a job that waits for others (`depends_on`), and a group of jobs with a
callback that runs once the whole group finished. The clients (jobrunner.client) call these;
the work is SQL's (sql/functions/enqueue_dependent_job.sql, and the trigger of migration
0004_flows.sql that releases dependents when their parents finish)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from jobrunner.new_job import InvalidJob, NewJob, ValidatedJob

if TYPE_CHECKING:
    from jobrunner.statements import Row

# what a parent that fails, dies or is cancelled does to its dependent: cancel it (the default),
# or let it run once every parent finished
OnParentFailure = Literal["cancel", "run"]
ON_PARENT_FAILURE: tuple[OnParentFailure, ...] = ("cancel", "run")
# enqueue_dependent_job's own limit
MAX_PARENTS = 100_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class FlowGroup:
    """What `enqueue_group` enqueued: the group's jobs, in the order given, and its callback."""

    job_ids: list[int]
    callback_id: int


@dataclass(frozen=True)
class ParentJob:
    """One parent of a dependent as it is now; `result` is the JSON its handler returned."""

    id: int
    job_type: str
    status: str
    result: Any
    last_error: str | None

    @classmethod
    def from_row(cls, row: Row) -> ParentJob:
        result = row["result"]
        return cls(
            id=row["id"],
            job_type=row["job_type"],
            status=row["status"],
            result=None if result is None else json.loads(result),
            last_error=row["last_error"],
        )


def checked_parents(depends_on: object, on_parent_failure: object) -> tuple[list[int], OnParentFailure]:
    """`depends_on` and `on_parent_failure` as enqueue_dependent_job takes them, after their
    checks (the function checks them again: SQL callers do not come through here)."""
    if isinstance(depends_on, (str, bytes)) or not isinstance(depends_on, Iterable):
        raise InvalidJob("depends_on must be a list of job ids")
    parents = list(depends_on)
    if not parents:
        raise InvalidJob("depends_on must name at least one job")
    if len(parents) > MAX_PARENTS:
        raise InvalidJob(f"depends_on may name at most {MAX_PARENTS} jobs, not {len(parents)}")
    for parent in parents:
        if type(parent) is not int or not _INT64_MIN <= parent <= _INT64_MAX:
            raise InvalidJob(f"depends_on must hold job ids (integers), not {parent!r}")
    if on_parent_failure not in ON_PARENT_FAILURE:
        raise InvalidJob(f"on_parent_failure must be 'cancel' or 'run', not {on_parent_failure!r}")
    return parents, on_parent_failure


def dependent_args(
    job: ValidatedJob, parents: list[int], on_parent_failure: OnParentFailure
) -> tuple[list[int], str, str, str, int, Any, int, str | None, str]:
    """The `enqueue_dependent` query's arguments for a job validated as any other (NewJob's
    checks) and its checked flow options."""
    job_type, payload_json, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key = job
    if dedupe_key is not None:
        raise InvalidJob("a job with depends_on cannot have a dedupe_key")
    return (
        parents,
        job_type,
        payload_json,
        queue,
        priority,
        scheduled_at,
        max_attempts,
        concurrency_key,
        on_parent_failure,
    )


def group_jobs(jobs: Iterable[NewJob], callback: NewJob) -> list[NewJob]:
    """The group's jobs, checked: at least one, no dedupe keys (a job skipped as a duplicate
    would silently leave the group)."""
    members = list(jobs)
    if not members:
        raise InvalidJob("a group needs at least one job")
    if any(job.dedupe_key is not None for job in members) or callback.dedupe_key is not None:
        raise InvalidJob("the jobs of a group and its callback cannot have a dedupe_key")
    return members
