"""Connections: which database (configured or embedded), the asyncpg pool the daemon runs on, and
which errors mean "try again"."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from jobrunner.dsn import DatabaseUrl, parse_database_url
from jobrunner.embedded import EmbeddedPostgres
from jobrunner.settings import Settings

# Errors after which the same statement may succeed once the database or network is back.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    # deadlock, serialisation failure: the same statement may well succeed when repeated
    asyncpg.exceptions.TransactionRollbackError,
    # asyncpg's protocol state after a connection was cut under it (seen with pg_terminate_backend)
    asyncpg.exceptions.InternalClientError,
)


# The daemon's own work (claims, outcome writes, heartbeats, maintenance) runs on a small pool
# of its own, so handlers that hold connections cannot starve the heartbeat and lose leases:
# the fetcher and the completer each may hold one while a third serves the timed services.
INTERNAL_POOL_SIZE = 3


def connect_kwargs(url: DatabaseUrl, connect_timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dsn": url.url, "timeout": connect_timeout}
    if url.behind_pooler:
        # Transaction poolers hand each transaction to any server connection: named prepared
        # statements would be missing on the next one.
        kwargs["statement_cache_size"] = 0
    return kwargs


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL):
    one more round trip after every statement. asyncpg still rolls back an open transaction."""


async def create_pool(
    url: DatabaseUrl,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: float,
    idle_timeout: float,
    reset_sessions: bool = True,
) -> asyncpg.Pool:
    """`reset_sessions=False` only for a pool that runs jobrunner's own statements, none of which
    leaves session state behind (locks are transaction-level, no SET, no LISTEN, no cursors):
    the claim and the outcome write then take one round trip each instead of two."""
    pool = await asyncpg.create_pool(
        **connect_kwargs(url, connect_timeout),
        min_size=min(min_size, max_size),
        max_size=max_size,
        max_inactive_connection_lifetime=idle_timeout,
        command_timeout=None,
        reset=None if reset_sessions else _keep_session,
    )
    assert pool is not None
    return pool


class DatabaseTarget:
    """The configured database, or the embedded one when none is configured."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedPostgres | None = None

    def __enter__(self) -> tuple[DatabaseUrl, DatabaseUrl | None]:
        s = self.settings
        if s.database_url is not None:
            url = parse_database_url(s.database_url.get_secret_value(), pgbouncer=s.pgbouncer)
        else:
            self.embedded = EmbeddedPostgres(s.embedded_data_dir)
            url = parse_database_url(self.embedded.start())
        listen = parse_database_url(s.listen_database_url.get_secret_value()) if s.listen_database_url else None
        return url, listen

    def __exit__(self, *_exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop()
