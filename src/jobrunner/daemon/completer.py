"""The completer: writes outcomes back in batches. Whatever finished while the last write was
in flight goes out in the next single statement (record_outcomes).

Nothing counts as done until its write has committed: then the job is let go (no longer held or
heartbeated), and counted in the stats and metrics by its kind. An outcome the database did not
write belonged to an attempt whose lease was lost (the job is someone else's now): counted as a
lost lease, and dropped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from jobrunner.daemon.backoff import Backoff
from jobrunner.daemon.in_flight import InFlight
from jobrunner.daemon.stats import DaemonStats
from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.metrics import DaemonMetrics
from jobrunner.outcomes import Outcome, Released
from jobrunner.store import JobStore

MAX_BATCH = 5_000


class BatchCompleter:
    def __init__(
        self,
        store: JobStore,
        in_flight: InFlight,
        stats: DaemonStats,
        metrics: DaemonMetrics,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._store = store
        self._in_flight = in_flight
        self._stats = stats
        self._metrics = metrics
        self._log = log
        self._buffer: list[Outcome] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, outcome: Outcome) -> None:
        self._buffer.append(outcome)
        self._idle.clear()
        self._ready.set()

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    async def run(self) -> None:
        backoff = Backoff("completer", self._log, self._metrics.database_errors)
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                batch, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
                try:
                    written = await self._store.record_outcomes(batch)
                except TRANSIENT_ERRORS as exc:
                    # keep them and try again: the fencing in record_outcomes makes a repeat harmless
                    self._buffer[:0] = batch
                    await asyncio.sleep(backoff.failed("writing outcomes failed, retrying", exc, jobs=len(batch)))
                    continue
                except Exception:
                    # Not the connection: some outcome in the batch cannot be stored. Write them
                    # one by one so one bad outcome cannot hold back the others forever.
                    self._log.exception("writing outcomes failed, isolating the bad one", jobs=len(batch))
                    batch, written = await self._write_one_by_one(batch)
                backoff.succeeded()
                self._committed(batch, written)
            self._idle.set()

    async def _write_one_by_one(self, batch: list[Outcome]) -> tuple[list[Outcome], set[int]]:
        """Returns the outcomes as finally written (bad ones replaced) and the ids written.
        Connection errors here put the rest back in the buffer for the main loop's retry."""
        done: list[Outcome] = []
        written: set[int] = set()
        for index, outcome in enumerate(batch):
            try:
                written |= await self._store.record_outcomes([outcome])
                done.append(outcome)
                continue
            except TRANSIENT_ERRORS:
                self._buffer[:0] = batch[index:]
                break
            except Exception as exc:
                # keep what happened (a completed job stays completed); drop the texts that could
                # not be stored and say so in plain ASCII
                note = f"the outcome's details could not be stored ({type(exc).__name__})"
                stand_in = outcome.stand_in(note)
            try:
                written |= await self._store.record_outcomes([stand_in])
                done.append(stand_in)
            except TRANSIENT_ERRORS:
                self._buffer[:0] = batch[index:]
                break
            except Exception:
                # cannot happen with plain ASCII text; if it does, the lease expires and the job runs again
                self._log.exception("dropping an outcome that cannot be stored", job_id=outcome.job_id)
        return done, written

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _committed(self, outcomes: Sequence[Outcome], written: set[int]) -> None:
        released_queues: set[str] = set()
        for outcome in outcomes:
            self._in_flight.let_go(outcome.job_id, outcome.attempt)
            if outcome.job_id not in written:
                self._stats.lost_leases += 1
                self._metrics.lost_leases.inc()
                self._log.warning(
                    "outcome discarded: the job's lease was lost before it was written",
                    job_id=outcome.job_id,
                    job_type=outcome.job_type,
                    attempt=outcome.attempt,
                )
                continue
            self._stats.count(outcome)
            self._metrics.job_finished(outcome.job_type, outcome.queue, outcome.name, outcome.duration)
            if type(outcome) is Released:
                released_queues.add(outcome.queue)
        if released_queues:
            # let other replicas pick the handed-back jobs up now rather than at their next poll
            asyncio.get_running_loop().create_task(self._notify_quietly(sorted(released_queues)))

    async def _notify_quietly(self, queues: list[str]) -> None:
        with contextlib.suppress(Exception):
            await self._store.notify_queues(queues)
