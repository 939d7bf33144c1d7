"""The queue's statements, run on asyncpg, rows mapped to jobrunner's types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from jobrunner.job import Job, JobStatus
from jobrunner.limits import GlobalLimits, QueueLimits
from jobrunner.outcomes import Cancelled, Completed, Dead, Failed, Outcome, Released, RetryAfter, Snoozed
from jobrunner.sql_files import Queries


@dataclass(frozen=True, slots=True)
class RescuedJob:
    id: int
    job_type: str
    queue: str
    status: str
    attempts: int
    worker_id: str | None


def _by_job_id(outcome: Outcome) -> int:
    return outcome.job_id


# record_outcomes' columns for an outcome other than a plain completion:
# status, retry_in, error, traceback, result, released
_OutcomeRow = tuple[str, float | None, str | None, str | None, str | None, bool]


def _outcome_row(outcome: Outcome) -> _OutcomeRow:
    """Each kind of outcome, as record_outcomes stores it (one kind, one way)."""
    match outcome:
        case Completed(result_json=result, note=note):
            return (JobStatus.COMPLETED, None, note, None, result, False)
        case RetryAfter(delay=delay, error=error, traceback=trace):
            return (JobStatus.PENDING, delay, error, trace, None, False)
        case Failed(error=error, traceback=trace):
            return (JobStatus.FAILED, None, error, trace, None, False)
        case Dead(error=error, traceback=trace):
            return (JobStatus.DEAD, None, error, trace, None, False)
        case Cancelled():
            return (JobStatus.CANCELLED, None, Cancelled.reason, None, None, False)
        case Released():
            # pending again at its old place in the queue, the attempt given back (or cancelled,
            # when a cancel was asked while it was held: the function decides)
            return (JobStatus.PENDING, 0.0, None, None, None, True)
        case Snoozed(delay=delay):
            # not a status of a row: record_outcomes makes it pending, gives the attempt back
            # and counts the snooze
            return ("snoozed", delay, None, None, None, False)
    raise TypeError(f"not an outcome: {outcome!r}")


def claim_order(job: Job) -> tuple[int, float, int]:
    # waited_seconds orders like scheduled_at (reversed) and, unlike it, is never an infinite
    # timestamp that asyncpg hands back as a naive datetime
    return (-job.priority, -job.waited_seconds, job.id)


@dataclass(frozen=True, slots=True)
class LimitedType:
    """A job type claimed apart: limited in this process (`room`: how many more it may run here,
    None for no such limit), globally (`limits`), or both."""

    job_type: str
    room: int | None
    limits: GlobalLimits | None


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What one claim may take: up to `limit` jobs of `queues` (the queues without limits); of
    them at most `limited_limit` from the limited types and queues, whose parts go first when
    `limited_first`."""

    queues: Sequence[str]
    limit: int
    limited_limit: int = 0
    limited_first: bool = False
    limited_types: Sequence[LimitedType] = ()
    limited_queues: Mapping[str, QueueLimits] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim's jobs, each side in claim order: the limited parts' (to start first) and the
    rest; and whether a limited part would have taken a job but had no room left."""

    limited: list[Job]
    unlimited: list[Job]
    limited_waiting: bool = False

    @property
    def all(self) -> list[Job]:
        return self.limited + self.unlimited


# JOBRUNNER_CLAIM_MAX_BYTES' default: what one claim may hold of payloads (at least one job)
DEFAULT_CLAIM_MAX_BYTES = 16 * 1024 * 1024


class JobStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, *, claim_max_bytes: int = DEFAULT_CLAIM_MAX_BYTES) -> None:
        self.pool = pool
        self.queries = Queries(schema)
        # every claim stops adding jobs once their payloads' JSON text passes this many bytes
        self.claim_max_bytes = claim_max_bytes

    async def claim(self, worker_id: str, lease_seconds: float, plan: ClaimPlan) -> Claimed:
        """Claim up to `plan.limit` runnable jobs in one round trip (sql/functions/claim_jobs.sql)."""
        rows = await self.pool.fetch(self.queries.claim, *self.claim_arguments(worker_id, lease_seconds, plan))
        limited: list[Job] = []
        unlimited: list[Job] = []
        limited_waiting = False
        for row in rows:
            if row[0] is None:  # no job: a limited part had one to take, but no room
                limited_waiting = True
            else:
                (limited if row[11] else unlimited).append(Job.from_claim_row(row[:11]))
        # UPDATE ... RETURNING keeps no order; each side in the order it was chosen
        limited.sort(key=claim_order)
        unlimited.sort(key=claim_order)
        return Claimed(limited, unlimited, limited_waiting)

    def claim_arguments(self, worker_id: str, lease_seconds: float, plan: ClaimPlan) -> tuple[object, ...]:
        """The arguments of the `claim` query for this plan, in claim_jobs' order."""
        types = plan.limited_types
        queue_limits = plan.limited_queues.values()
        return (
            worker_id,
            lease_seconds,
            plan.limit,
            self.claim_max_bytes,
            list(plan.queues),
            plan.limited_limit,
            plan.limited_first,
            [t.job_type for t in types],
            [t.room for t in types],
            [t.limits and t.limits.max_running for t in types],
            [t.limits and t.limits.rate for t in types],
            [t.limits and t.limits.per_seconds for t in types],
            [t.limits and t.limits.per_key_max_running for t in types],
            list(plan.limited_queues),
            [q.max_running for q in queue_limits],
            [q.rate for q in queue_limits],
            [q.per_seconds for q in queue_limits],
        )

    async def claim_batch(self, queues: Sequence[str], worker_id: str, limit: int, lease_seconds: float) -> list[Job]:
        """Claim up to `limit` runnable jobs of `queues`, no job type or queue limited."""
        return (await self.claim(worker_id, lease_seconds, ClaimPlan(queues, limit))).unlimited

    async def ensure_limit_state(
        self, type_limits: Mapping[str, GlobalLimits], queue_limits: Mapping[str, QueueLimits]
    ) -> None:
        """Create the limit-state rows the claims of these types and queues take (full buckets)."""
        if not type_limits and not queue_limits:
            return
        await self.pool.execute(
            self.queries.ensure_limit_state,
            list(type_limits),
            [limits.rate for limits in type_limits.values()],
            list(queue_limits),
            [limits.rate for limits in queue_limits.values()],
        )

    def filled_byte_budget(self, jobs: Sequence[Job]) -> bool:
        """Whether a claim that returned fewer jobs than asked may have been cut short by the
        byte budget rather than by the queue running dry: its payloads reach half the budget in
        UTF-8 bytes, as the claim counts them. (A cut claim's payloads plus the next job's pass
        the budget; the next job is at most the database's payload limit, so this holds while
        the budget is at least twice that limit: 16 MiB against 1 MiB by default.)"""
        half = self.claim_max_bytes / 2
        characters = sum(len(job.payload_json) for job in jobs)
        # UTF-8 takes one to four bytes a character: encode only when that leaves it open
        if characters >= half:
            return True
        if 4 * characters < half:
            return False
        return sum(len(job.payload_json.encode()) for job in jobs) >= half

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> set[int]:
        """Write outcomes in one statement; returns ids written (others had lost their lease)."""
        # the rows are locked in array order (record_outcomes' plan): ascending ids, as the
        # heartbeat locks them, so that the two writes cannot deadlock on each other's rows
        ordered = sorted(outcomes, key=_by_job_id)
        plain = [o for o in ordered if type(o) is Completed and o.is_plain]
        other = [o for o in ordered if not (type(o) is Completed and o.is_plain)] if len(plain) < len(ordered) else []
        rows = [_outcome_row(o) for o in other]
        statuses, retry_in, errors, tracebacks, results, released = (
            (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [], [])
        )
        written = await self.pool.fetch(
            self.queries.record_outcomes,
            [o.job_id for o in plain],
            [o.attempt for o in plain],
            [o.job_id for o in other],
            [o.attempt for o in other],
            statuses,
            retry_in,
            errors,
            tracebacks,
            results,
            released,
        )
        return {row["id"] for row in written}

    async def seconds_until_runnable(self, queues: Sequence[str]) -> float | None:
        seconds: float | None = await self.pool.fetchval(self.queries.seconds_until_runnable, list(queues))
        return seconds

    async def pause_job_type(self, job_type: str, seconds: float, reason: str) -> None:
        await self.pool.execute(self.queries.pause_job_type, job_type, seconds, reason)

    async def notify_queues(self, queues: Sequence[str]) -> None:
        await self.pool.execute(self.queries.notify_queues, list(queues))

    async def extend_leases(self, held: dict[int, int], lease_seconds: float) -> set[int]:
        rows = await self.pool.fetch(self.queries.extend_leases, list(held), list(held.values()), lease_seconds)
        return {row["id"] for row in rows}

    async def rescue_expired_leases(self, limit: int) -> list[RescuedJob]:
        rows = await self.pool.fetch(self.queries.rescue_expired_leases, limit)
        return [RescuedJob(**dict(row)) for row in rows]

    async def cancel_requested(self, job_ids: Sequence[int]) -> set[int]:
        rows = await self.pool.fetch(self.queries.cancel_requested, list(job_ids))
        return {row["id"] for row in rows}

    async def set_progress(self, job_id: int, attempt: int, progress_json: str) -> bool:
        status = await self.pool.execute(self.queries.set_progress, job_id, attempt, progress_json)
        return status.endswith(" 1")

    async def snoozes(self, job_id: int, attempt: int) -> int | None:
        """How often the job snoozed so far; None when this attempt is no longer running."""
        count: int | None = await self.pool.fetchval(self.queries.snoozes, job_id, attempt)
        return count

    async def acquire_leadership(self, name: str, holder: str, ttl_seconds: float) -> bool:
        return await self.pool.fetchval(self.queries.acquire_leadership, name, holder, ttl_seconds) is not None

    async def release_leadership(self, name: str, holder: str) -> None:
        await self.pool.execute(self.queries.release_leadership, name, holder)

    async def sample_queue_depth(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(self.queries.sample_queue_depth)

    async def hot_table_vacuum_state(self) -> asyncpg.Record:
        row = await self.pool.fetchrow(self.queries.hot_table_vacuum_state)
        assert row is not None  # one row: the regclass cast fails if the table does not exist
        return row

    async def vacuum_hot_table(self) -> None:
        await self.pool.execute(self.queries.vacuum_hot_table)

    async def prune_finished(self, older_than_seconds: float, batch: int) -> int | None:
        """Delete one batch of old finished jobs; None when another replica is pruning."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(self.queries.try_maintenance_lock, "prune"):
                return None
            status = await conn.execute(self.queries.prune_finished, older_than_seconds, batch)
        return int(status.split()[-1])
