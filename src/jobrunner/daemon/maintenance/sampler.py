"""Samples of the database taken by one replica at a time (the holder of a leader lease), so ten
replicas don't run ten count queries: the queue-depth sampler, and each plugin's `Sampler`
(jobrunner.samplers) on the handlers' pool. A replica that does not hold the lease, or whose
sample failed, clears what it exported: stale figures are worse than none, since another replica
may take over meanwhile."""

from __future__ import annotations

from abc import ABC, abstractmethod

import asyncpg
import structlog

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.maintenance.leadership import Leadership
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.metrics import DaemonMetrics
from jobrunner.samplers import Sampler
from jobrunner.store import JobStore

LEADERSHIP = "queue_sampler"


class LeaderSampler(PeriodicService, ABC):
    """Each turn takes or renews the lease `lease` and samples only while holding it."""

    def __init__(
        self,
        name: str,
        store: JobStore,
        lease: str,
        holder: str,
        interval: float,
        log: structlog.typing.FilteringBoundLogger,
        metrics: DaemonMetrics,
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, interval, log=log, errors=metrics.database_errors, clock=clock, run_at_start=True)
        self.leadership = Leadership(store, lease, holder, log)

    @abstractmethod
    async def sample(self) -> None:
        """Take one sample and export it."""

    @abstractmethod
    def clear(self) -> None:
        """Export nothing (not leading, or the sample failed)."""

    @abstractmethod
    def show_leading(self, leading: bool) -> None:
        """The leader gauge."""

    async def run_once(self) -> None:
        await self.sample_once()

    async def sample_once(self) -> bool:
        """Sample if we hold (or can take) the lease; returns whether we did."""
        leading = await self.leadership.acquire(3 * self.interval)
        self.show_leading(leading)
        if not leading:
            self.clear()
            return False
        await self.sample()
        return True

    def failed(self, exc: Exception) -> None:
        self.leadership.lost()
        self.show_leading(False)
        self.clear()

    async def stopped(self) -> None:
        await self.leadership.release_quietly()


class QueueDepthSampler(LeaderSampler):
    """Queue depth into the jobrunner_queue_* gauges."""

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
        super().__init__("sampler", store, LEADERSHIP, holder, interval, log, metrics, clock=clock)
        self._store = store
        self._metrics = metrics

    async def sample(self) -> None:
        # queues nobody configured (any INSERT can name one) are summed into one label
        self._metrics.queue_depth(await self._store.sample_queue_depth())

    def clear(self) -> None:
        self._metrics.clear_queue_depth()

    def show_leading(self, leading: bool) -> None:
        self._metrics.sampler_leader.set(1 if leading else 0)


class PluginSampler(LeaderSampler):
    """One plugin's Sampler under its own lease (`sampler:<name>`), on the handlers' pool; its
    failures count as component `plugin_sampler` when they are database errors (periodic.py)."""

    def __init__(
        self,
        store: JobStore,
        pool: asyncpg.Pool,
        sampler: Sampler,
        metrics: DaemonMetrics,
        holder: str,
        interval: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        super().__init__(
            "plugin_sampler",
            store,
            sampler.lease,
            holder,
            sampler.interval or interval,
            log.bind(sampler=sampler.name),
            metrics,
        )
        self._pool = pool
        self._sampler = sampler
        self._metrics = metrics
        self._leader_gauge = metrics.plugin_sampler_leader.labels(sampler.name)

    async def sample(self) -> None:
        self._metrics.sampled.replace(self._sampler, await self._sampler.sample(self._pool))

    def clear(self) -> None:
        self._metrics.sampled.clear(self._sampler)

    def show_leading(self, leading: bool) -> None:
        self._leader_gauge.set(1 if leading else 0)
