"""The one reconnect backoff of the daemon's loops, and how their failures are counted and logged.

Every loop that talks to the database (the fetcher, the completer, the LISTEN connection, the
start-up checks, each periodic service) keeps one `Backoff`: each failure is logged and followed
by a wait that doubles from 0.1 s up to 10 s with full jitter, so replicas cut off together do not
come back in step. A database error (the connection, or an error PostgreSQL raised) is counted in
`jobrunner_database_errors{component}`; anything else is a bug (ours or a plugin's): logged with
its traceback, retried the same way, and not counted as a database error.
"""

from __future__ import annotations

import math
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.retry import RetryPolicy

RECONNECT_POLICY = RetryPolicy(base_delay=0.1, factor=2.0, max_delay=10.0)

# what counts in jobrunner_database_errors: the connection failed, or PostgreSQL raised
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)


class Backoff:
    def __init__(
        self,
        component: str,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
        *,
        longest: float = math.inf,
    ) -> None:
        """`errors`: the database_errors counter (labelled by component here); `longest` caps
        the wait (a periodic service never waits longer than its own interval)."""
        self.component = component
        self._log = log
        self._errors = errors.labels(component) if errors is not None else None
        self._longest = longest
        self.failures = 0

    def failed(self, event: str, exc: BaseException, *, unexpected: bool = False, **fields: Any) -> float:
        """Count and log one failure; returns how long to wait before the next try. Logged at
        the 1st, 2nd, 4th, 8th... failure in a row: a long outage is not a line a second.
        `unexpected`: not a database error, logged with its traceback and not counted."""
        self.failures += 1
        if self._errors is not None and not unexpected:
            self._errors.inc()
        delay = min(self._longest, RECONNECT_POLICY.delay_for(self.failures))
        if self.failures & (self.failures - 1) == 0:
            fields.update(retry_in=round(delay, 2), failures=self.failures)
            if unexpected:  # not the connection: the traceback says what
                self._log.exception(event, **fields)
            else:
                self._log.warning(event, error=repr(exc), **fields)
        return delay

    def succeeded(self, event: str | None = None) -> None:
        """A try went through: the next failure starts the backoff afresh."""
        if self.failures and event is not None:
            self._log.info(event, failures=self.failures)
        self.failures = 0
