"""Which of the jobs this daemon holds were asked to stop: the table says so, nothing else.

`cancel_job()` flags a running job (`cancel_requested_at`) and sends a NOTIFY on
`jobrunner_cancel_<schema>` with its id. Any role that can log in can send that NOTIFY too, so a
notification is only a hint to look: ids this daemon does not hold are dropped without a query,
the others are gathered and checked against the table in one query, at most one per
`min_interval`. Every `poll_interval` all held jobs are checked as well (a NOTIFY missed while
LISTEN was down, or no LISTEN behind a transaction pooler). Only ids the table confirms are
cancelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

import structlog
from prometheus_client import Counter

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.store import JobStore

# a job id is a bigint: at most 19 digits (longer payloads are not ours)
_MAX_ID_DIGITS = 19


def job_id_from_payload(payload: str) -> int | None:
    """The job id a cancel notification names, or None when it names none."""
    if not payload or len(payload) > _MAX_ID_DIGITS or not (payload.isascii() and payload.isdigit()):
        return None
    return int(payload)


class CancelRequests(PeriodicService):
    def __init__(
        self,
        store: JobStore,
        held: Callable[[], Collection[int]],
        holds: Callable[[int], bool],
        cancel: Callable[[int], object],
        *,
        poll_interval: float,
        min_interval: float,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
        clock: Clock | None = None,
    ) -> None:
        # hints that come while a check runs wait for the next one: one query per interval at most
        super().__init__("cancel_poll", poll_interval, log=log, errors=errors, clock=clock, min_gap=min_interval)
        self._store = store
        self._held = held
        self._holds = holds
        self._cancel = cancel
        # hinted ids held here, not checked yet (never more than the jobs held)
        self._hinted: set[int] = set()
        self._next_poll = math.inf  # set when it starts

    def hint(self, job_id: int) -> None:
        """A notification named job_id: check it soon if we hold it, else ignore it."""
        if self._holds(job_id):
            self._hinted.add(job_id)
            self.wake()

    async def run(self) -> None:
        self._next_poll = self.clock.time() + self.interval
        await super().run()

    def next_wait(self) -> float:
        return max(0.0, self._next_poll - self.clock.time())

    async def run_once(self) -> None:
        """Every poll_interval all held jobs; in between, the hinted ones still held."""
        if self.clock.time() >= self._next_poll:
            self._next_poll = self.clock.time() + self.interval
            candidates = list(self._held())
        else:
            candidates = [job_id for job_id in self._hinted if self._holds(job_id)]
        self._hinted.clear()
        if candidates:
            for job_id in await self._store.cancel_requested(candidates):
                self._cancel(job_id)
