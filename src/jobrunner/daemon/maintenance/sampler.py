"""Samples queue depth into gauges on one replica at a time (the holder of a leader lease), so
ten replicas don't run ten count queries; the others clear their gauges."""

from __future__ import annotations

import structlog

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.maintenance.leadership import Leadership
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.metrics import DaemonMetrics
from jobrunner.store import JobStore

LEADERSHIP = "queue_sampler"


class QueueDepthSampler(PeriodicService):
    def __init__(
        self,
        store: JobStore,
        metrics: DaemonMetrics,
        holder: str,
        interval: float,
        log: structlog.typing.FilteringBoundLogger,
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("sampler", interval, log=log, errors=metrics.database_errors, clock=clock, run_at_start=True)
        self._store = store
        self._metrics = metrics
        self.leadership = Leadership(store, LEADERSHIP, holder, log)

    async def run_once(self) -> None:
        await self.sample_once()

    async def sample_once(self) -> bool:
        """Sample if we hold (or can take) the lease; returns whether we did."""
        leading = await self.leadership.acquire(3 * self.interval)
        self._metrics.sampler_leader.set(1 if leading else 0)
        if not leading:
            self._metrics.clear_queue_depth()
            return False
        # queues nobody configured (any INSERT can name one) are summed into one label
        self._metrics.queue_depth(await self._store.sample_queue_depth())
        return True

    def failed(self, exc: Exception) -> None:
        # stale figures are worse than none: another replica may take over meanwhile
        self.leadership.lost()
        self._metrics.sampler_leader.set(0)
        self._metrics.clear_queue_depth()

    async def stopped(self) -> None:
        await self.leadership.release_quietly()
