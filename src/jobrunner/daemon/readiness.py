"""The readiness probe behind /readyz: it checks the database on a connection of its own every
JOBRUNNER_READINESS_INTERVAL, and a request only reads its last finding.

A request therefore costs no query, however many arrive: a flood of /readyz cannot queue
statements on the database, and cannot take the connections the claims and the outcome writes
run on (the daemon's pool of three).
"""

from __future__ import annotations

import contextlib

import asyncpg
import structlog
from prometheus_client import Counter

from jobrunner.daemon.periodic import PeriodicService
from jobrunner.database import connect_kwargs
from jobrunner.dsn import DatabaseUrl
from jobrunner.migrate import discover_migration_sets, pending_migrations

# longest a check's queries may take before the database counts as not answering
CHECK_TIMEOUT = 2.0


class ReadinessProbe(PeriodicService):
    def __init__(
        self,
        url: DatabaseUrl,
        schema: str,
        *,
        interval: float,
        connect_timeout: float,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
        check_timeout: float = CHECK_TIMEOUT,
    ) -> None:
        super().__init__("readiness", interval, log=log, errors=errors, run_at_start=True)
        self._url = url
        self._schema = schema
        self._connect_timeout = connect_timeout
        self._check_timeout = check_timeout
        self._conn: asyncpg.Connection | None = None
        # the migrations this build ships do not change while it runs: found once (entry points
        # and files), not per check
        self._migration_sets = discover_migration_sets()
        # None when ready, else what is missing; what /readyz answers
        self.problem: str | None = "not checked yet"
        self.checks = 0

    async def run_once(self) -> None:
        if self._conn is None:
            self._conn = await asyncpg.connect(
                **connect_kwargs(self._url, self._connect_timeout),
                # asyncpg cancels a query that overruns it on the server too, so a check stuck
                # behind a lock leaves no backend waiting behind it
                command_timeout=self._check_timeout,
            )
        try:
            missing = await pending_migrations(self._conn, self._schema, self._migration_sets)
        except Exception:
            # a fresh connection next time: this one may be broken
            conn, self._conn = self._conn, None
            await _close(conn, self._check_timeout)
            raise
        self._report(f"migrations pending: {', '.join(missing)}" if missing else None)

    def failed(self, exc: Exception) -> None:
        self._report(f"database unreachable ({type(exc).__name__})")

    async def stopped(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def _report(self, problem: str | None) -> None:
        # the first check finding all well is the expected start: not worth a line
        if problem != self.problem and (self.checks > 0 or problem is not None):
            self.log.info("readiness changed", ready=problem is None, problem=problem)
        self.checks += 1
        self.problem = problem


async def _close(conn: asyncpg.Connection, within: float) -> None:
    try:
        await conn.close(timeout=within)
    except Exception:
        with contextlib.suppress(Exception):
            conn.terminate()
