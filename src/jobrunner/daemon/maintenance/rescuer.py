"""Puts jobs whose worker stopped heartbeating (SIGKILL, OOM, lost host) back in the queue.

Every replica runs it: the rescue statement takes the expired rows with SKIP LOCKED, so two
replicas never rescue the same job.
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.metrics import DaemonMetrics
from jobrunner.store import JobStore

RESCUE_BATCH = 1_000


class LeaseRescuer(PeriodicService):
    def __init__(
        self,
        store: JobStore,
        interval: float,
        log: structlog.typing.FilteringBoundLogger,
        metrics: DaemonMetrics | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        errors: Counter | None = metrics.database_errors if metrics is not None else None
        super().__init__("rescuer", interval, log=log, errors=errors, clock=clock)
        self._store = store
        self._metrics = metrics

    async def run_once(self) -> None:
        while await self.rescue_once() == RESCUE_BATCH and not self.stopping:
            pass

    async def rescue_once(self) -> int:
        rescued = await self._store.rescue_expired_leases(RESCUE_BATCH)
        for job in rescued:
            self.log.warning(
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
        if self._metrics is not None and rescued:
            self._metrics.rescued.inc(len(rescued))
            # a rescue that ends the job is an outcome like any other for the dashboards and alerts
            for job in rescued:
                if job.status in ("dead", "cancelled"):
                    self._metrics.job_finished(job.job_type, job.queue, job.status, None)
        return len(rescued)
