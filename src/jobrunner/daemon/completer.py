"""Write outcomes back in batches: whatever finished while the last write was in flight goes
out in the next single statement. Nothing counts as done until its write has committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from prometheus_client import Counter

from jobrunner.daemon.backoff import Backoff
from jobrunner.daemon.outcomes import Outcome
from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.store import JobStore

MAX_BATCH = 5_000

CommittedCallback = Callable[[Sequence[Outcome], set[int]], None]


class BatchCompleter:
    def __init__(
        self,
        store: JobStore,
        on_committed: CommittedCallback,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
    ) -> None:
        self._errors = errors
        self._store = store
        self._on_committed = on_committed
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
        backoff = Backoff("completer", self._log, self._errors)
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
                self._on_committed(batch, written)
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
