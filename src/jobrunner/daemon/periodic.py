"""The one shape of every recurring task of the daemon: do one thing every `interval`, until stopped.

A service subclasses `PeriodicService` and writes `run_once()`. The base gives each of them the
same life:

- the first run comes at once (`run_at_start`) or one interval after the start;
- an exception in a run is a failure: logged and retried after the reconnect backoff but never
  later than the interval; a database error is counted in
  `jobrunner_database_errors{component=name}`, anything else is logged with its traceback
  (backoff.py); `failed(exc)` lets a service drop what a failure makes stale;
- `wake()` runs it before its interval is up, though never sooner than `min_gap` after the last
  run ended: a flood of wake-ups costs one run per gap;
- `stop()` ends it once the run under way is over; `stopped()` then lets go of what it holds.

Across replicas, services never coordinate through memory: what must happen once is decided by
the database (a row lock taken with SKIP LOCKED, a conditional UPDATE, an advisory lock) and what
must run on one replica at a time holds a leader lease (maintenance/leadership.py).
"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Counter

from jobrunner.daemon.backoff import DATABASE_ERRORS, Backoff
from jobrunner.daemon.clock import Clock


class PeriodicService:
    def __init__(
        self,
        name: str,
        interval: float,
        *,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
        clock: Clock | None = None,
        run_at_start: bool = False,
        min_gap: float = 0.0,
    ) -> None:
        """`name` labels its failures in logs and metrics; `errors`: the daemon's
        database_errors counter (None in tests that do not look)."""
        self.name = name
        self.interval = interval
        self.log = log
        self.clock = clock or Clock()
        self._errors = errors
        self._run_at_start = run_at_start
        self._min_gap = min_gap
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # set by wake() and by stop()
        self._last_run_ended = -float("inf")

    @property
    def enabled(self) -> bool:
        """False: run() returns at once (the service is turned off by its settings)."""
        return True

    @property
    def stopping(self) -> bool:
        """stop() was called: a long run may end early."""
        return self._stop.is_set()

    async def run_once(self) -> None:
        raise NotImplementedError

    def failed(self, exc: Exception) -> None:
        """A run raised `exc` (already counted and logged)."""

    async def stopped(self) -> None:
        """The service ended (stopped or cancelled): let go of what it holds."""

    def next_wait(self) -> float:
        """Seconds from the end of a run that went through to the next run."""
        return self.interval

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        if not self.enabled:
            return
        backoff = Backoff(self.name, self.log, self._errors, longest=self.interval)
        wait = 0.0 if self._run_at_start else self.interval
        try:
            while await self._pause(wait):
                try:
                    await self.run_once()
                except Exception as exc:
                    self.failed(exc)
                    unexpected = not isinstance(exc, DATABASE_ERRORS)
                    wait = backoff.failed(f"{self.name} failed, will retry", exc, unexpected=unexpected)
                    continue
                finally:
                    self._last_run_ended = self.clock.time()
                backoff.succeeded(f"{self.name} works again")
                wait = self.next_wait()
        finally:
            await self.stopped()

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds`, or until woken (but `min_gap` after the last run at least). False
        once stopped."""
        if await self.clock.sleep_unless(self._wake, seconds) and not self._stop.is_set():
            gap_left = self._last_run_ended + self._min_gap - self.clock.time()
            if gap_left > 0:
                await self.clock.sleep_unless(self._stop, gap_left)
        self._wake.clear()
        return not self._stop.is_set()
