"""Pausing and resuming queues, persistent in the database (table jobrunner_queue_pauses).

A paused queue keeps accepting jobs, but no replica claims them: claim_jobs reads the table on
every claim and leaves paused queues out, so a pause holds everywhere from each replica's next
claim on, with nothing to tell the daemons. Jobs already claimed (running, or claimed ahead and
waiting in a daemon for a slot) run on. Resuming wakes the idle daemons that work the queue.
Each pause and resume writes an audit row in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from jobrunner.audit import Actor, record_action
from jobrunner.operator_statements import OperatorStatements
from jobrunner.statements import run

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# as background_jobs' queue column allows
MAX_QUEUE_NAME = 200


class InvalidQueueName(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class QueuePause:
    queue: str
    paused_at: datetime
    paused_by: str
    reason: str | None


def _checked(queue: str) -> str:
    if not queue or len(queue) > MAX_QUEUE_NAME:
        raise InvalidQueueName(f"a queue name is 1 to {MAX_QUEUE_NAME} characters")
    return queue


async def pause_queue(
    conn: Connection, statements: OperatorStatements, queue: str, actor: Actor, reason: str | None = None
) -> bool:
    """Pause `queue`; False when it was paused already (then nothing changes)."""
    _checked(queue)
    if reason is not None:
        reason = reason.strip()[:1000] or None
    async with conn.transaction():
        paused = await run(conn, statements.pause_queue(queue, actor.name[:200], reason))
        await record_action(
            conn, statements, actor, "pause_queue", {"queue": queue}, affected=int(paused), detail=reason
        )
    return paused


async def resume_queue(conn: Connection, statements: OperatorStatements, queue: str, actor: Actor) -> bool:
    """Resume `queue`; False when it was not paused."""
    _checked(queue)
    async with conn.transaction():
        resumed = await run(conn, statements.resume_queue(queue))
        await record_action(conn, statements, actor, "resume_queue", {"queue": queue}, affected=int(resumed))
    return resumed


async def queue_pauses(conn: Connection, statements: OperatorStatements) -> list[QueuePause]:
    return [QueuePause(**dict(row)) for row in await run(conn, statements.queue_pauses())]
