"""Services that keep the queue's tables in shape, each on the periodic-service base
(daemon/periodic.py): the lease rescuer, the pruner, the vacuumer, the queue-depth sampler, the
plugins' samplers and the cron scheduler. Every replica runs them all; the database decides which
replica does what."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from jobrunner.daemon.maintenance.pruner import FinishedJobPruner
from jobrunner.daemon.maintenance.rescuer import LeaseRescuer
from jobrunner.daemon.maintenance.sampler import PluginSampler, QueueDepthSampler
from jobrunner.daemon.maintenance.scheduler import SchedulerService
from jobrunner.daemon.maintenance.vacuumer import HotTableVacuumer
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.metrics import DaemonMetrics
from jobrunner.samplers import Sampler
from jobrunner.settings import Settings
from jobrunner.store import JobStore


def maintenance_services(
    store: JobStore,
    settings: Settings,
    worker_id: str,
    metrics: DaemonMetrics,
    log: structlog.typing.FilteringBoundLogger,
    pool: asyncpg.Pool,
    handler_pool: asyncpg.Pool,
    samplers: Sequence[Sampler],
) -> list[PeriodicService]:
    """The maintenance services of one daemon, configured by its settings; the plugins'
    samplers run on the handlers' pool."""
    s, errors = settings, metrics.database_errors
    return [
        LeaseRescuer(store, s.rescue_interval, log, metrics),
        QueueDepthSampler(store, metrics, worker_id, s.sample_interval, log),
        FinishedJobPruner(store, s.retention_seconds, s.prune_interval, log, errors),
        HotTableVacuumer(store, worker_id, s.vacuum, s.vacuum_interval, s.vacuum_min_dead_rows, log, errors),
        SchedulerService.for_daemon(pool, s, worker_id, log, errors),
        *(
            PluginSampler(store, handler_pool, sampler, metrics, worker_id, s.sample_interval, log)
            for sampler in samplers
        ),
    ]
