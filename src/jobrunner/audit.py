"""The audit trail of operator actions (table jobrunner_audit): who did what, when, to how many.

Every action an operator takes from outside a daemon writes one row: the dashboard's job
actions, queue pauses from the dashboard or the CLI, running a schedule now. A bulk action
writes its row first and counts into it batch by batch, so a row whose `finished_at` is NULL is
one still running (or cut short: its `affected` says how far it got).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from jobrunner.operator_statements import OperatorStatements
from jobrunner.statements import run

# a pool, a connection, or one borrowed from a pool (not jobrunner.client's alias: the CLI
# imports this module, and the client module brings psycopg)
Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a dashboard user (or `local` on an unauthenticated loopback dashboard), or the
    operating-system user behind a CLI command; `via` says which (dashboard, cli)."""

    name: str
    via: str


async def record_action(
    db: Executor,
    statements: OperatorStatements,
    actor: Actor,
    action: str,
    target: Mapping[str, Any],
    *,
    affected: int,
    requested: int | None = None,
    finished: bool = True,
    detail: str | None = None,
) -> int:
    """Write one audit row; returns its id. `finished=False` for a bulk action that will count
    into it (count_into)."""
    return await run(
        db, statements.record_audit(actor.name[:200], actor.via, action, target, requested, affected, finished, detail)
    )


async def count_into(
    db: Executor,
    statements: OperatorStatements,
    audit_id: int,
    affected: int,
    *,
    finished: bool,
    detail: str | None = None,
) -> None:
    """A bulk action's batch changed `affected` more jobs; `finished` ends the row."""
    await run(db, statements.count_into_audit(audit_id, affected, finished, detail))
