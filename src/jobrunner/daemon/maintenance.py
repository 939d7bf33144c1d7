"""Timed services every replica runs; the database keeps them from stepping on each other
(SKIP LOCKED for the rescuer, advisory locks for the pruner, leader leases for the vacuumer and
the samplers)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod

import asyncpg
import structlog

from jobrunner.daemon.backoff import sleep_unless
from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.metrics import DaemonMetrics
from jobrunner.samplers import Sampler
from jobrunner.settings import VacuumMode
from jobrunner.store import JobStore

RESCUE_BATCH = 1_000
PRUNE_BATCH = 5_000


class LeaseRescuer:
    """Puts jobs whose worker stopped heartbeating (SIGKILL, OOM, lost host) back in the queue."""

    def __init__(
        self,
        store: JobStore,
        interval: float,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._interval = interval
        self._stopping = stopping
        self._log = log

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
        if self._metrics is not None and rescued:
            self._metrics.rescued.inc(len(rescued))
            # a rescue that ends the job is an outcome like any other for the dashboards and alerts
            for job in rescued:
                if job.status in ("dead", "cancelled"):
                    self._metrics.job_finished(job.job_type, job.queue, job.status, None)
        return len(rescued)

    async def run(self) -> None:
        while not await sleep_unless(self._stopping, self._interval):
            try:
                while await self.rescue_once() == RESCUE_BATCH:
                    pass
            except Exception as exc:
                if self._metrics is not None:
                    self._metrics.database_errors.labels("rescuer").inc()
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


class LeaderSampler(ABC):
    """A sample of the database taken by one replica at a time: each turn takes or renews a
    leader lease (a row, so it holds behind a transaction pooler) and samples only while holding
    it; a replica that does not hold it, or whose sample failed, clears what it exported (stale
    figures are worse than none: another replica may take over meanwhile)."""

    def __init__(
        self,
        store: JobStore,
        lease: str,
        holder: str,
        interval: float,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
        what: str,
    ) -> None:
        self._store = store
        self._lease = lease
        self._holder = holder
        self._interval = interval
        self._stopping = stopping
        self._log = log
        self._what = what
        self.leading = False

    @abstractmethod
    async def sample(self) -> None:
        """Take one sample and export it."""

    @abstractmethod
    def clear(self) -> None:
        """Export nothing (not leading, or the sample failed)."""

    @abstractmethod
    def show_leading(self, leading: bool) -> None:
        """The leader gauge."""

    @abstractmethod
    def count_failure(self, exc: Exception) -> None:
        """A failed turn, for the metrics."""

    async def sample_once(self) -> bool:
        """Sample if we hold (or can take) the lease; returns whether we did."""
        leading = await self._store.acquire_leadership(self._lease, self._holder, 3 * self._interval)
        if leading != self.leading:
            self._log.info(f"{self._what} leadership changed", leading=leading)
        self.leading = leading
        self.show_leading(leading)
        if not leading:
            self.clear()
            return False
        await self.sample()
        return True

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sample_once()
                except Exception as exc:
                    self.count_failure(exc)
                    self._log.warning(f"{self._what} failed, will retry", error=repr(exc))
                    self.leading = False
                    self.show_leading(False)
                    self.clear()
                if await sleep_unless(self._stopping, self._interval):
                    break
        finally:
            if self.leading:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.release_leadership(self._lease, self._holder))


class QueueDepthSampler(LeaderSampler):
    """Samples queue depth into gauges, so ten replicas don't run ten count queries."""

    LEADERSHIP = "queue_sampler"

    def __init__(
        self,
        store: JobStore,
        metrics: DaemonMetrics,
        holder: str,
        interval: float,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        super().__init__(store, self.LEADERSHIP, holder, interval, stopping, log, "queue depth sampler")
        self._metrics = metrics

    async def sample(self) -> None:
        # queues nobody configured (any INSERT can name one) are summed into one label
        self._metrics.queue_depth(await self._store.sample_queue_depth())

    def clear(self) -> None:
        self._metrics.clear_queue_depth()

    def show_leading(self, leading: bool) -> None:
        self._metrics.sampler_leader.set(1 if leading else 0)

    def count_failure(self, exc: Exception) -> None:
        self._metrics.database_errors.labels("sampler").inc()


class PluginSampler(LeaderSampler):
    """Runs one plugin's Sampler (jobrunner.samplers) under its own lease and exports its families."""

    def __init__(
        self,
        store: JobStore,
        pool: asyncpg.Pool,
        sampler: Sampler,
        metrics: DaemonMetrics,
        holder: str,
        interval: float,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        super().__init__(
            store,
            sampler.lease,
            holder,
            sampler.interval or interval,
            stopping,
            log.bind(sampler=sampler.name),
            "plugin sampler",
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

    def count_failure(self, exc: Exception) -> None:
        # the plugin's own bugs are logged; failed round trips count like every component's
        if isinstance(exc, (*TRANSIENT_ERRORS, asyncpg.PostgresError)):
            self._metrics.database_errors.labels("plugin_sampler").inc()


def vacuum_due(mode: VacuumMode, autovacuum_on: bool, dead_rows: int, live_rows: int, min_dead_rows: int) -> bool:
    """Whether background_jobs needs our VACUUM now: in `auto` mode only where autovacuum is
    off (every claim and every outcome leaves a dead row version, and nothing else reclaims
    them); past `min_dead_rows` dead rows and a tenth of the live ones."""
    if mode == "never" or (mode == "auto" and autovacuum_on):
        return False
    return dead_rows >= min_dead_rows and dead_rows >= live_rows // 10


class HotTableVacuumer:
    """Keeps background_jobs from growing without bound where autovacuum does not run: VACUUMs
    it when enough dead rows piled up, one replica at a time (the holder of a leader lease: a
    row, not a session lock, so it holds behind a transaction pooler too)."""

    LEADERSHIP = "vacuum"

    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        mode: VacuumMode,
        interval: float,
        min_dead_rows: int,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._mode = mode
        self._interval = interval
        self._min_dead_rows = min_dead_rows
        self._stopping = stopping
        self._log = log
        self._warned = False

    async def vacuum_if_due(self) -> bool:
        state = await self._store.hot_table_vacuum_state()
        dead, live = state["dead_rows"], state["live_rows"]
        if not vacuum_due(self._mode, state["autovacuum_on"], dead, live, self._min_dead_rows):
            return False
        if not state["may_vacuum"]:
            if not self._warned:
                self._warned = True
                self._log.warning(
                    "background_jobs needs VACUUM and this role may not run it (only its owner may): "
                    "turn autovacuum on, or run the daemon as the table's owner, or VACUUM it from cron",
                    dead_rows=dead,
                    autovacuum=state["autovacuum_on"],
                )
            return False
        # the lease outlives one VACUUM: another replica cannot start one meanwhile
        if not await self._store.acquire_leadership(self.LEADERSHIP, self._worker_id, 3 * self._interval + 600):
            return False
        started = time.perf_counter()
        try:
            await self._store.vacuum_hot_table()
        finally:
            await self._store.release_leadership(self.LEADERSHIP, self._worker_id)
        self._log.info(
            "vacuumed background_jobs",
            dead_rows_before=dead,
            seconds=round(time.perf_counter() - started, 3),
            autovacuum=state["autovacuum_on"],
        )
        return True

    async def run(self) -> None:
        if self._mode == "never":
            return
        while not await sleep_unless(self._stopping, self._interval):
            try:
                await self.vacuum_if_due()
            except Exception as exc:
                self._log.warning("vacuum failed, will retry", error=repr(exc))
