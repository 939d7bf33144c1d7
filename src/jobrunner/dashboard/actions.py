"""The dashboard's actions on jobs: retry, cancel, delete, run now, change priority; on chosen
jobs, or on every job matching a filter in bounded batches. Each writes an audit row.

A bulk action is confirmed with a count of the jobs it applies to, up to the newest job at the
time of the count (`upper_id`): jobs enqueued after the confirmation are not touched. It then
runs in the background, one transaction per batch of JOBRUNNER_DASHBOARD_BULK_BATCH jobs, and
counts into its audit row as it goes. Batches lock their jobs with SKIP LOCKED: a job a daemon
is claiming at that moment is passed over (counted as not changed), never waited for, so the
daemons' claims are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from jobrunner.audit import Actor, count_into, record_action
from jobrunner.client import AsyncConnection
from jobrunner.dashboard.action_statements import ActionStatements
from jobrunner.dashboard.filters import PRIORITY_RANGE, JobFilter
from jobrunner.operator_statements import OperatorStatements
from jobrunner.statements import run

log = structlog.get_logger("jobrunner.dashboard")

MAX_SELECTION = 500


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    # the statuses of the jobs it changes; a job in another status is left as it is
    statuses: tuple[str, ...]
    query: str
    # what the confirmation says it does
    explains: str


ACTIONS = {
    action.name: action
    for action in (
        Action(
            "retry",
            "Retry",
            ("failed", "dead", "cancelled"),
            "dashboard_retry_jobs",
            "failed, dead and cancelled jobs get a fresh set of attempts and run now",
        ),
        Action(
            "cancel",
            "Cancel",
            ("pending", "running"),
            "dashboard_cancel_jobs",
            "pending jobs end cancelled; running jobs are stopped where they run and end cancelled",
        ),
        Action(
            "delete",
            "Delete",
            ("pending", "completed", "failed", "dead", "cancelled"),
            "dashboard_delete_jobs",
            "the jobs are deleted for good (running jobs are left: cancel them first)",
        ),
        Action(
            "run_now",
            "Run now",
            ("pending",),
            "dashboard_run_jobs_now",
            "pending jobs scheduled for later (delayed, or waiting to be retried) become runnable now",
        ),
        Action(
            "set_priority",
            "Set priority",
            ("pending",),
            "dashboard_set_priority",
            "pending jobs get the new priority (higher runs first)",
        ),
    )
}


class ActionRefused(ValueError):
    """An action that cannot be done as asked: shown to the operator, nothing changed."""


def action_named(name: str) -> Action:
    try:
        return ACTIONS[name]
    except KeyError:
        raise ActionRefused(f"there is no action {name[:40]!r}") from None


def checked_priority(action: Action, value: str | None) -> int | None:
    if action.name != "set_priority":
        return None
    try:
        priority = int(value or "")
    except ValueError:
        raise ActionRefused("the new priority must be a whole number") from None
    if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise ActionRefused("the new priority is out of range")
    return priority


@dataclass
class Applied:
    """What one statement of an action did."""

    changed: int
    queues: set[str]
    # jobs left as they were because a live job holds their dedupe key (retry)
    dedupe_held: int = 0


async def _apply_once(
    conn: AsyncConnection, statements: ActionStatements, action: Action, ids: list[int], priority: int | None
) -> Applied:
    rows = await run(conn, statements.change_jobs(action.query, ids, priority))
    if action.name == "cancel":
        return Applied(sum(1 for r in rows if r["status"] in ("cancelled", "cancelling")), set())
    return Applied(len(rows), {r["queue"] for r in rows})


async def apply(
    conn: AsyncConnection, statements: ActionStatements, action: Action, ids: Sequence[int], priority: int | None
) -> Applied:
    """Apply `action` to `ids` inside the caller's transaction. A retry that would give two live
    jobs the same dedupe key leaves that job as it is (one savepoint per job, only then)."""
    ordered = sorted(set(ids))
    try:
        async with conn.transaction():
            return await _apply_once(conn, statements, action, ordered, priority)
    except asyncpg.UniqueViolationError:
        pass
    total = Applied(0, set())
    for job_id in ordered:
        try:
            async with conn.transaction():
                one = await _apply_once(conn, statements, action, [job_id], priority)
        except asyncpg.UniqueViolationError:
            total.dedupe_held += 1
            continue
        total.changed += one.changed
        total.queues |= one.queues
    return total


def _detail(applied: Applied) -> str | None:
    if applied.dedupe_held:
        return f"{applied.dedupe_held} job(s) not retried: a live job holds the same dedupe key"
    return None


async def act_on_jobs(
    pool: asyncpg.Pool,
    statements: ActionStatements,
    operator: OperatorStatements,
    actor: Actor,
    action: Action,
    ids: Sequence[int],
    priority: int | None,
) -> tuple[Applied, int]:
    """The action on chosen jobs, with its audit row, in one transaction; returns what it did
    and the audit row's id."""
    if not ids:
        raise ActionRefused("no job was chosen")
    if len(ids) > MAX_SELECTION:
        raise ActionRefused(f"at most {MAX_SELECTION} jobs at once; use 'all matching' for more")
    async with pool.acquire() as conn, conn.transaction():
        applied = await apply(conn, statements, action, ids, priority)
        target: dict[str, object] = {"jobs": sorted(set(ids))}
        if priority is not None:
            target["priority"] = priority
        audit_id = await record_action(
            conn,
            operator,
            actor,
            action.name,
            target,
            requested=len(set(ids)),
            affected=applied.changed,
            detail=_detail(applied),
        )
        if applied.queues:
            await run(conn, statements.notify_queues(applied.queues))
    return applied, audit_id


async def count_matching(
    pool: asyncpg.Pool, statements: ActionStatements, action: Action, job_filter: JobFilter
) -> tuple[int, int]:
    """How many jobs the bulk action would change, and the newest job it may touch."""
    bounds = await run(pool, statements.id_bounds())
    upper_id = int(bounds["highest"] or 0) if bounds is not None else 0
    count = await run(pool, statements.count_matching(upper_id, action.statuses, job_filter))
    return count, upper_id


async def start_bulk(
    pool: asyncpg.Pool,
    statements: ActionStatements,
    operator: OperatorStatements,
    actor: Actor,
    action: Action,
    job_filter: JobFilter,
    *,
    upper_id: int,
    confirmed: int,
    priority: int | None,
    batch: int,
) -> tuple[int, asyncio.Task[None]]:
    """Record the bulk action and start it; returns its audit row's id and its task."""
    target: dict[str, object] = {"filter": job_filter.as_json(), "up_to_id": upper_id}
    if priority is not None:
        target["priority"] = priority
    audit_id = await record_action(
        pool, operator, actor, action.name, target, requested=confirmed, affected=0, finished=False
    )
    task = asyncio.create_task(
        _run_bulk(pool, statements, operator, action, job_filter, upper_id, priority, batch, audit_id),
        name=f"dashboard bulk {action.name} #{audit_id}",
    )
    return audit_id, task


async def _run_bulk(
    pool: asyncpg.Pool,
    statements: ActionStatements,
    operator: OperatorStatements,
    action: Action,
    job_filter: JobFilter,
    upper_id: int,
    priority: int | None,
    batch: int,
    audit_id: int,
) -> None:
    cursor = upper_id
    dedupe_held = 0
    try:
        while True:
            async with pool.acquire() as conn, conn.transaction():
                picked = await run(conn, statements.pick_matching(cursor, action.statuses, job_filter, batch))
                if not picked:
                    break
                ids = [row["id"] for row in picked]
                applied = await apply(conn, statements, action, ids, priority)
                dedupe_held += applied.dedupe_held
                await count_into(conn, operator, audit_id, applied.changed, finished=False)
                if applied.queues:
                    await run(conn, statements.notify_queues(applied.queues))
            cursor = min(ids) - 1
        detail = _detail(Applied(0, set(), dedupe_held))
        await count_into(pool, operator, audit_id, 0, finished=True, detail=detail)
    except Exception as exc:
        log.exception("dashboard bulk action failed", audit_id=audit_id, action=action.name)
        with contextlib.suppress(Exception):  # the database may be what failed
            await count_into(pool, operator, audit_id, 0, finished=True, detail=f"stopped by an error: {exc!r}"[:1000])
