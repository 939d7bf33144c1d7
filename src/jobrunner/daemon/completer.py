"""Write outcomes back in batches: whatever finished while the last write was in flight goes
out in the next single statement. Nothing counts as done until its write has committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from jobrunner.daemon.backoff import RECONNECT_POLICY
from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.store import JobStore, Outcome

MAX_BATCH = 5_000

CommittedCallback = Callable[[Sequence[Outcome], set[int]], None]


class BatchCompleter:
    def __init__(
        self,
        store: JobStore,
        on_committed: CommittedCallback,
        log: structlog.typing.FilteringBoundLogger,
        error_counter: Any = None,
    ) -> None:
        self._error_counter = error_counter
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
        failures = 0
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                batch, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
                try:
                    written = await self._store.record_outcomes(batch)
                except TRANSIENT_ERRORS as exc:
                    if self._error_counter is not None:
                        self._error_counter.inc()
                    # keep them and try again: the fencing in record_outcomes makes a repeat harmless
                    self._buffer[:0] = batch
                    failures += 1
                    delay = RECONNECT_POLICY.delay_for(failures)
                    self._log.warning(
                        "writing outcomes failed, retrying", error=repr(exc), jobs=len(batch), retry_in=round(delay, 2)
                    )
                    await asyncio.sleep(delay)
                    continue
                except Exception:
                    self._buffer[:0] = batch
                    failures += 1
                    self._log.exception("writing outcomes failed unexpectedly, retrying", jobs=len(batch))
                    await asyncio.sleep(RECONNECT_POLICY.delay_for(failures))
                    continue
                failures = 0
                self._on_committed(batch, written)
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
