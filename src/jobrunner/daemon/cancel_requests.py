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

import asyncio
from collections.abc import Callable, Collection
from typing import Any

import structlog

from jobrunner.daemon.clock import sleep_unless
from jobrunner.store import JobStore

# a job id is a bigint: at most 19 digits (longer payloads are not ours)
_MAX_ID_DIGITS = 19


def job_id_from_payload(payload: str) -> int | None:
    """The job id a cancel notification names, or None when it names none."""
    if not payload or len(payload) > _MAX_ID_DIGITS or not (payload.isascii() and payload.isdigit()):
        return None
    return int(payload)


class CancelRequests:
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
        error_counter: Any = None,
    ) -> None:
        self._store = store
        self._held = held
        self._holds = holds
        self._cancel = cancel
        self._poll_interval = poll_interval
        self._min_interval = min_interval
        self._log = log
        self._error_counter = error_counter
        # hinted ids held here, not checked yet (never more than the jobs held)
        self._hinted: set[int] = set()
        self._hint = asyncio.Event()

    def hint(self, job_id: int) -> None:
        """A notification named job_id: check it soon if we hold it, else ignore it."""
        if self._holds(job_id):
            self._hinted.add(job_id)
            self._hint.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self._poll_interval
        while True:
            await sleep_unless(self._hint, max(0.0, next_poll - loop.time()))
            self._hint.clear()
            if loop.time() >= next_poll:
                next_poll = loop.time() + self._poll_interval
                candidates = list(self._held())
            else:
                candidates = [job_id for job_id in self._hinted if self._holds(job_id)]
            self._hinted.clear()
            if not candidates:
                continue
            await self._check(candidates)
            # hints that come meanwhile wait for the next round: one query per interval at most
            await asyncio.sleep(self._min_interval)

    async def _check(self, job_ids: list[int]) -> None:
        try:
            requested = await self._store.cancel_requested(job_ids)
        except Exception as exc:
            if self._error_counter is not None:
                self._error_counter.inc()
            self._log.warning("checking for cancellations failed, will retry", error=repr(exc))
            return
        for job_id in requested:
            self._cancel(job_id)
