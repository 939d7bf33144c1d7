"""The database a command works on: its URL (configured or embedded) and one connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from jobrunner import event_loop
from jobrunner.database import DatabaseTarget, connect_kwargs
from jobrunner.dsn import DatabaseUrl
from jobrunner.settings import Settings


class DatabaseUnavailable(RuntimeError):
    """The command's connection failed; the message names the server, never the password."""


async def connect(url: DatabaseUrl, settings: Settings) -> asyncpg.Connection:
    # asyncpg's own messages do not say which server: a typo in a host name read only
    # "Name or service not known"
    try:
        return await asyncpg.connect(**connect_kwargs(url, settings.connect_timeout))
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise DatabaseUnavailable(f"the database at {url.server()} refused the login: {exc}") from exc
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError) as exc:
        reason = str(exc) or (
            f"no answer within {settings.connect_timeout:g}s" if isinstance(exc, TimeoutError) else type(exc).__name__
        )
        raise DatabaseUnavailable(f"cannot connect to the database at {url.server()}: {reason}") from exc


@asynccontextmanager
async def connection(url: DatabaseUrl, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(url, settings)
    try:
        yield conn
    finally:
        await conn.close()


def with_database(
    settings: Settings, body: Callable[[DatabaseUrl, DatabaseUrl | None], Coroutine[Any, Any, int]]
) -> int:
    with DatabaseTarget(settings) as (url, listen):
        return event_loop.run(body(url, listen), settings.event_loop)
