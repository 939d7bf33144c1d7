"""One statement, run the same way by asyncpg and by psycopg 3.

A `Statement` is a named query of `sql/queries/` rendered for a schema, its arguments in order,
what to fetch and how to read the result: everything about the statement but the driver. It is
defined once (jobrunner.job_statements) and run by `run` (asyncpg, for the daemon and asyncio
applications) or `run_sync` (psycopg, for synchronous applications).

Both drivers get the query text exactly as it is in the file, `$1` placeholders included:
asyncpg speaks PostgreSQL's own placeholders, and psycopg does too through its `RawCursor`
(psycopg 3.2 and later), which sends the text to the server as it is, with the arguments bound
by position. No placeholder is rewritten, and a `%` or a `$` in a string literal or a comment
means what it means to PostgreSQL.

The one error both runners translate: the database's refusal of a payload over its size limit
becomes the `InvalidJob` the clients' own check raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import asyncpg

from jobrunner.new_job import payload_limit_error

if TYPE_CHECKING:
    import psycopg
    from psycopg.errors import CheckViolation
    from psycopg.rows import BaseRowFactory

T = TypeVar("T")

# a connection, or one borrowed from a pool: what the clients take as `connection=`
AsyncConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# what `run` takes: a pool or a connection
AsyncExecutor = asyncpg.Pool | AsyncConnection


class Row(Protocol):
    """A row as both drivers give it here: columns by name (an asyncpg Record, a psycopg dict)."""

    def __getitem__(self, column: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


class Returns(Enum):
    """What a statement's result is read from."""

    VALUE = "value"  # the first column of the first row (None without a row)
    ROW = "row"  # the first row (None without one)
    ROWS = "rows"  # every row
    NOTHING = "nothing"  # no result


def _as_is(result: Any) -> Any:
    return result


@dataclass(frozen=True, slots=True)
class Statement(Generic[T]):
    sql: str
    args: tuple[object, ...]
    returns: Returns
    # from the value, the row (or None), or the list of rows, to what the caller gets
    read: Callable[[Any], T] = _as_is


async def run(db: AsyncExecutor, statement: Statement[T]) -> T:
    """Run `statement` on asyncpg."""
    try:
        if statement.returns is Returns.VALUE:
            result: Any = await db.fetchval(statement.sql, *statement.args)
        elif statement.returns is Returns.ROW:
            result = await db.fetchrow(statement.sql, *statement.args)
        elif statement.returns is Returns.ROWS:
            result = await db.fetch(statement.sql, *statement.args)
        else:
            result = await db.execute(statement.sql, *statement.args)
    except asyncpg.CheckViolationError as exc:
        refused = payload_limit_error(exc.constraint_name, exc.message)
        if refused is not None:
            raise refused from exc
        raise
    return statement.read(result)


@cache
def _psycopg() -> tuple[type[psycopg.RawCursor[Any]], type[CheckViolation], BaseRowFactory[dict[str, Any]]]:
    """psycopg's raw cursor, its check-violation error and its dict row factory, imported when
    the first statement runs on it (the daemon and asyncio applications never load psycopg)."""
    from psycopg import RawCursor
    from psycopg.errors import CheckViolation
    from psycopg.rows import dict_row

    return RawCursor, CheckViolation, dict_row


def run_sync(connection: psycopg.Connection[Any], statement: Statement[T]) -> T:
    """Run `statement` on psycopg, in the connection's current transaction."""
    raw_cursor, check_violation, dict_row = _psycopg()
    returns = statement.returns
    # a value is read from a plain tuple row; rows by name from dicts
    cursor = raw_cursor(connection) if returns is Returns.VALUE else raw_cursor(connection, row_factory=dict_row)
    with cursor:
        try:
            cursor.execute(statement.sql, statement.args)  # the text of a sql/ file, never user input
        except check_violation as exc:
            refused = payload_limit_error(exc.diag.constraint_name, exc.diag.message_primary or str(exc))
            if refused is not None:
                raise refused from exc
            raise
        if returns is Returns.NOTHING:
            return statement.read(None)
        rows: Sequence[Any] = cursor.fetchall()
    if returns is Returns.ROWS:
        return statement.read(rows)
    first = rows[0] if rows else None
    if returns is Returns.ROW:
        return statement.read(first)
    return statement.read(None if first is None else first[0])
