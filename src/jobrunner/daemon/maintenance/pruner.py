"""Deletes finished jobs older than the retention, in bounded batches.

Every replica runs it; the delete takes a transaction-scoped advisory lock first (store.py's
prune_finished), so one replica prunes at a time and the others skip their turn.
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.store import JobStore

PRUNE_BATCH = 5_000


class FinishedJobPruner(PeriodicService):
    def __init__(
        self,
        store: JobStore,
        retention: float,
        interval: float,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
        *,
        batch: int = PRUNE_BATCH,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("pruner", interval, log=log, errors=errors, clock=clock)
        self._store = store
        self._retention = retention
        self._batch = batch

    async def run_once(self) -> None:
        await self.prune_once()

    async def prune_once(self) -> int:
        deleted = 0
        while not self.stopping:
            batch = await self._store.prune_finished(self._retention, self._batch)
            if batch is None:  # another replica holds the prune lock
                break
            deleted += batch
            if batch < self._batch:
                break
        if deleted:
            self.log.info("pruned finished jobs", deleted=deleted, retention_seconds=self._retention)
        return deleted
