"""Live updates: one server-sent event stream per open page, fed by one watcher per dashboard.

While at least one page is open, the watcher asks the database every refresh interval whether
anything a page shows changed (dashboard_change_marker: a few index probes), and sooner when a
NOTIFY says jobs were inserted; on a change every open page is told, and re-reads its figures;
once more after the last change, when the live counts shown then are no longer reused
(DashboardStore.live_counts).
A notification is only a hint here too: the marker decides. With no page open it asks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog

from jobrunner.dashboard.store import DashboardStore
from jobrunner.database import TRANSIENT_ERRORS, connect_kwargs
from jobrunner.dsn import DatabaseUrl

log = structlog.get_logger("jobrunner.dashboard")

KEEPALIVE_SECONDS = 15.0
CHANGE = "change"


class LiveFeed:
    def __init__(self, store: DashboardStore, url: DatabaseUrl, interval: float, connect_timeout: float) -> None:
        self._store = store
        self._url = url
        self._interval = interval
        self._connect_timeout = connect_timeout
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._hint = asyncio.Event()
        self._someone_watches = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.checks = 0  # how often the marker was read (the tests look)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(), name="dashboard live watcher"),
            asyncio.create_task(self._listen(), name="dashboard LISTEN"),
        ]

    async def close(self) -> None:
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _tell_everyone(self) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(CHANGE)

    async def _watch(self) -> None:
        last: str | None = None
        settle = False
        while True:
            await self._someone_watches.wait()
            marker: str | None
            try:
                marker = await self._store.change_marker()
                self.checks += 1
            except TRANSIENT_ERRORS as exc:
                log.warning("dashboard live update failed", error=repr(exc))
                marker = last
            if last is not None and marker != last:
                self._tell_everyone()
                settle = True
            elif settle and time.monotonic() >= self._store.live_reused_until:
                # once more after the last change, when the counts the pages were shown then are
                # no longer reused: a page must not keep the figures of a change's first moment
                self._tell_everyone()
                settle = False
            last = marker
            self._hint.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hint.wait(), self._interval)
            # a hint does not bring the next look closer than half an interval
            await asyncio.sleep(self._interval / 2 if self._hint.is_set() else 0)

    async def _listen(self) -> None:
        """New jobs: a hint to look now. Without LISTEN (a transaction pooler) polling alone."""
        channel = f"jobrunner_{self._store.schema}"
        while True:
            try:
                conn = await asyncpg.connect(**connect_kwargs(self._url, self._connect_timeout))
            except TRANSIENT_ERRORS:
                await asyncio.sleep(5.0)
                continue
            try:
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(channel, lambda *_args: self._hint.set())
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 30.0)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
            except TRANSIENT_ERRORS:
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)
            await asyncio.sleep(1.0)

    async def events(self) -> AsyncIterator[str]:
        """One page's stream: `change` events, and comments now and then to keep it open."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        self._someone_watches.set()
        try:
            yield "retry: 5000\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if event is None:
                    return
                yield f"event: {event}\ndata: {event}\n\n"
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers:
                self._someone_watches.clear()
