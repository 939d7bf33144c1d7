"""Timed services every replica runs; the database keeps them from stepping on each other
(SKIP LOCKED for the rescuer, an advisory lock for the pruner)."""

from __future__ import annotations

import asyncio

import structlog

from jobrunner.daemon.backoff import sleep_unless
from jobrunner.store import JobStore

RESCUE_BATCH = 1_000
PRUNE_BATCH = 5_000


class LeaseRescuer:
    """Puts jobs whose worker stopped heartbeating (SIGKILL, OOM, lost host) back in the queue."""

    def __init__(
        self, store: JobStore, interval: float, stopping: asyncio.Event, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._store = store
        self._interval = interval
        self._stopping = stopping
        self._log = log
        self.rescued_total = 0

    async def rescue_once(self) -> int:
        rescued = await self._store.rescue_expired_leases(RESCUE_BATCH)
        for job in rescued:
            self._log.warning(
                "rescued job from a worker whose lease expired",
                job_id=job.id,
                job_type=job.job_type,
                attempt=job.attempts,
                lost_worker=job.worker_id,
                now=job.status,
            )
        requeued = sorted({job.queue for job in rescued if job.status == "pending"})
        if requeued:
            await self._store.notify_queues(requeued)
        self.rescued_total += len(rescued)
        return len(rescued)

    async def run(self) -> None:
        while not await sleep_unless(self._stopping, self._interval):
            try:
                while await self.rescue_once() == RESCUE_BATCH:
                    pass
            except Exception as exc:
                self._log.warning("lease rescue failed, will retry", error=repr(exc))


class FinishedJobPruner:
    """Deletes finished jobs older than the retention, in bounded batches."""

    def __init__(
        self,
        store: JobStore,
        retention: float,
        interval: float,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._store = store
        self._retention = retention
        self._interval = interval
        self._stopping = stopping
        self._log = log

    async def prune_once(self) -> int:
        deleted = 0
        while not self._stopping.is_set():
            batch = await self._store.prune_finished(self._retention, PRUNE_BATCH)
            if batch is None:  # another replica holds the prune lock
                break
            deleted += batch
            if batch < PRUNE_BATCH:
                break
        if deleted:
            self._log.info("pruned finished jobs", deleted=deleted, retention_seconds=self._retention)
        return deleted

    async def run(self) -> None:
        while not await sleep_unless(self._stopping, self._interval):
            try:
                await self.prune_once()
            except Exception as exc:
                self._log.warning("pruning failed, will retry", error=repr(exc))
