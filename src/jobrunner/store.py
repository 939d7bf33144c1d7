"""The queue's statements, run on asyncpg, rows mapped to jobrunner's types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from jobrunner.daemon.outcomes import Cancelled, Completed, Dead, Failed, Outcome, Released, RetryAfter
from jobrunner.job import Job, JobStatus
from jobrunner.limits import GlobalLimits, QueueLimits
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
    raise TypeError(f"not an outcome: {outcome!r}")


def claim_order(job: Job) -> tuple[int, float, int]:
    # waited_seconds orders like scheduled_at (reversed) and, unlike it, is never an infinite
    # timestamp that asyncpg hands back as a naive datetime
    return (-job.priority, -job.waited_seconds, job.id)


# JOBRUNNER_CLAIM_MAX_BYTES' default: what one claim may hold of payloads (at least one job)
DEFAULT_CLAIM_MAX_BYTES = 16 * 1024 * 1024


class JobStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, *, claim_max_bytes: int = DEFAULT_CLAIM_MAX_BYTES) -> None:
        self.pool = pool
        self.queries = Queries(schema)
        # every claim stops adding jobs once their payloads' JSON text passes this many bytes
        self.claim_max_bytes = claim_max_bytes

    async def claim_batch(
        self,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
        skip_types: Sequence[str] = (),
        only_type: str | None = None,
    ) -> list[Job]:
        if only_type is None:
            rows = await self.pool.fetch(
                self.queries.claim_batch,
                list(queues),
                worker_id,
                limit,
                lease_seconds,
                list(skip_types),
                self.claim_max_bytes,
            )
        else:  # skip_types cannot matter: only one type is claimed
            rows = await self.pool.fetch(
                self.queries.claim_batch_of_type,
                list(queues),
                worker_id,
                limit,
                lease_seconds,
                only_type,
                self.claim_max_bytes,
            )
        jobs = [Job.from_claim_row(row) for row in rows]
        # UPDATE ... RETURNING keeps no order; start them in the order they were chosen
        jobs.sort(key=claim_order)
        return jobs

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

    async def claim_within_limits(
        self,
        queues: Sequence[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
        *,
        job_type: str | None,
        skip_types: Sequence[str],
        type_limits: GlobalLimits | None,
        queue: str | None,
        queue_limits: QueueLimits | None,
    ) -> list[Job]:
        """Claim under a job type's global limits (`job_type`, else any type but `skip_types`), a
        queue's (`queue`, else `queues` without queue limits), or both."""
        rows = await self.pool.fetch(
            self.queries.claim_within_limits,
            list(queues),
            worker_id,
            limit,
            lease_seconds,
            job_type,
            list(skip_types),
            type_limits and type_limits.max_running,
            type_limits and type_limits.rate,
            type_limits and type_limits.per_seconds,
            type_limits and type_limits.per_key_max_running,
            queue,
            queue_limits and queue_limits.max_running,
            queue_limits and queue_limits.rate,
            queue_limits and queue_limits.per_seconds,
            self.claim_max_bytes,
        )
        return sorted((Job.from_claim_row(row) for row in rows), key=claim_order)

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
