"""The bench's baseline: the simplest correct asyncio + asyncpg worker over jobrunner's own
`background_jobs` table, with nothing a job system adds (leases, heartbeats, retries, limits,
cancellation, metrics, logging, maintenance).

- claim: one statement, `UPDATE … WHERE id = ANY(ARRAY(SELECT … ORDER BY priority DESC, scheduled_at,
  id LIMIT n FOR UPDATE SKIP LOCKED)) RETURNING`, on a connection of its own that also LISTENs on the
  channel the table's insert trigger notifies;
- run: one asyncio task per job, the handler of its job type;
- complete: the ids of the finished jobs in one `UPDATE … WHERE id = ANY($1)`, on a second
  connection, while the next claim goes on; a failing handler's job is marked `failed`.

Concurrency C means what it means for jobrunner's daemon: at most C handlers running, and at most
2·C jobs claimed whose outcome is not committed yet. A claim takes min(free slots, batch_size);
there is no prefetch. In burst mode the loop returns once a claim finds nothing and every job it
claimed is settled; otherwise a claim that comes back short waits for a notification, or the
poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

# Jobs of one queue, in the order of background_jobs_claim_idx (queue, priority DESC,
# scheduled_at, id) WHERE status = 'pending': the equality on queue lets the index hand them over
# in that order. The ids reach the UPDATE as an array, found through the primary key: written
# `id IN (SELECT …)`, the planner hashes the subquery and joins it against a sequential scan of
# the whole table.
CLAIM = """
UPDATE background_jobs
SET status = 'running', attempts = attempts + 1, started_at = now(), worker_id = $3
WHERE id = ANY(ARRAY(
    SELECT id FROM background_jobs
    WHERE status = 'pending' AND queue = $1 AND scheduled_at <= now()
    ORDER BY priority DESC, scheduled_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
RETURNING id, job_type, payload::text
"""
COMPLETE = "UPDATE background_jobs SET status = 'completed', finished_at = now() WHERE id = ANY($1::bigint[])"
FAIL = """
UPDATE background_jobs AS j SET status = 'failed', finished_at = now(), last_error = f.error
FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
WHERE j.id = f.id
"""
# what background_jobs' insert trigger notifies (schema public), the queue as its payload
CHANNEL = "jobrunner_public"

BareHandler = Callable[[int, dict[str, Any]], Awaitable[None]]


class BareLoop:
    def __init__(
        self,
        url: str,
        handlers: Mapping[str, BareHandler],
        *,
        concurrency: int,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        burst: bool = False,
        queue: str = "default",
        worker_id: str = "bare-loop",
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        self._url = url
        self._handlers = dict(handlers)
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._burst = burst
        self._queue = queue
        self._worker_id = worker_id
        self.claimed = 0
        self.completed = 0
        self.failed = 0
        # set once LISTEN is in place: from then on an inserted job wakes the loop
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._outcomes_waiting = asyncio.Event()
        self._closing = False
        self._running = 0  # handlers running
        self._unsettled = 0  # claimed, outcome not committed yet
        self._done: list[int] = []
        self._errors: list[tuple[int, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Claim nothing more; run() returns once the running jobs' outcomes are committed."""
        self._stopping.set()
        self._wakeup.set()
        self._slot_freed.set()

    async def run(self) -> int:
        """Work until stopped (in burst mode: until nothing is left); returns the jobs completed."""
        fetch_conn = await asyncpg.connect(self._url)
        try:
            complete_conn = await asyncpg.connect(self._url)
            try:
                await fetch_conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                await self._work(fetch_conn, complete_conn)
            finally:
                await complete_conn.close()
        finally:
            await fetch_conn.close()
        return self.completed

    async def _work(self, fetch_conn: asyncpg.Connection, complete_conn: asyncpg.Connection) -> None:
        fetcher = asyncio.create_task(self._fetch_loop(fetch_conn))
        completer = asyncio.create_task(self._complete_loop(complete_conn))
        try:
            done, _ = await asyncio.wait({fetcher, completer}, return_when=asyncio.FIRST_COMPLETED)
            if completer in done:  # it only ends early by failing: say why
                completer.result()
                raise RuntimeError("the completer stopped before the fetcher")
            fetcher.result()
            if self._tasks:
                await asyncio.gather(*self._tasks)
            self._closing = True
            self._outcomes_waiting.set()
            await completer
        finally:
            # after a failure nothing may go on using the connections about to be closed
            tasks = [fetcher, completer, *self._tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _queue: object) -> None:
        self._wakeup.set()

    async def _fetch_loop(self, conn: asyncpg.Connection) -> None:
        claim = await conn.prepare(CLAIM)
        while not self._stopping.is_set():
            free = min(self._concurrency - self._running, 2 * self._concurrency - self._unsettled)
            if free <= 0:
                # jobs are running or unsettled: each of them sets the event when it frees a slot
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            limit = min(free, self._batch_size)
            self._wakeup.clear()
            rows = await claim.fetch(self._queue, limit, self._worker_id)
            self.claimed += len(rows)
            for job_id, job_type, payload in rows:
                self._running += 1
                self._unsettled += 1
                task = asyncio.create_task(self._run_one(job_id, job_type, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(rows) == limit:
                continue  # there may be more right away
            if self._burst:
                if not rows and self._unsettled == 0:
                    return
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)

    async def _run_one(self, job_id: int, job_type: str, payload: str) -> None:
        try:
            handler = self._handlers.get(job_type)
            if handler is None:
                raise LookupError(f"no handler for job type {job_type!r}")
            await handler(job_id, json.loads(payload))
        except Exception as exc:
            self._errors.append((job_id, repr(exc)))
        else:
            self._done.append(job_id)
        finally:
            self._running -= 1
            self._slot_freed.set()
            self._outcomes_waiting.set()

    async def _complete_loop(self, conn: asyncpg.Connection) -> None:
        complete = await conn.prepare(COMPLETE)
        while True:
            await self._outcomes_waiting.wait()
            self._outcomes_waiting.clear()
            # everything finished so far in one statement; what finishes meanwhile goes next
            done, self._done = self._done, []
            errors, self._errors = self._errors, []
            if done:
                await complete.fetch(done)
                self.completed += len(done)
            if errors:
                await conn.execute(FAIL, [job_id for job_id, _ in errors], [error for _, error in errors])
                self.failed += len(errors)
            self._unsettled -= len(done) + len(errors)
            self._slot_freed.set()
            if self._closing and not self._done and not self._errors:
                return
