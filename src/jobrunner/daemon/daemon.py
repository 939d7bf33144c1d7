"""The daemon: wires the pipeline together and runs its life: start, readiness, drain, stop.

NOTIFY / poll ─► fetcher.py ─claim─► executor.py ─► attempt.py ─outcome─► completer.py
                              in_flight.py: every job held, from its claim to its commit
alongside:  lease_keeper.py (heartbeats, lost leases, cancel requests)
            maintenance/ (rescuer, pruner, vacuumer, samplers, scheduler), all on periodic.py
starting: startup.py (pools, migration check, retried while the database is away)
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import asyncpg
import structlog

from jobrunner.client import AsyncClient
from jobrunner.daemon.completer import BatchCompleter
from jobrunner.daemon.executor import Executor
from jobrunner.daemon.fetcher import Fetcher, PrefetchExpiry
from jobrunner.daemon.in_flight import InFlight
from jobrunner.daemon.lease_keeper import LeaseKeeper
from jobrunner.daemon.listener import NotificationListener
from jobrunner.daemon.maintenance import maintenance_services
from jobrunner.daemon.ops import start_ops_endpoint
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.daemon.startup import NotMigrated, Startup, close_pool, log_start
from jobrunner.daemon.stats import DaemonStats
from jobrunner.daemon.watchdog import Watchdog
from jobrunner.dsn import DatabaseUrl
from jobrunner.error_reporting import init_error_reporting
from jobrunner.http_server import OpsServer
from jobrunner.metrics import DaemonMetrics, MetricLabels
from jobrunner.redaction import register_environment_secrets, register_settings_secrets
from jobrunner.registry import HandlerRegistry
from jobrunner.samplers import Sampler
from jobrunner.settings import Settings
from jobrunner.store import JobStore
from jobrunner.systemd_notify import SystemdNotifier

__all__ = ["Daemon", "NotMigrated"]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        registry: HandlerRegistry,
        database_url: DatabaseUrl,
        listen_url: DatabaseUrl | None = None,
        *,
        burst: bool = False,
        samplers: Sequence[Sampler] = (),
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.samplers = list(samplers)
        self.database_url = database_url
        self.listen_url = listen_url
        self.burst = burst
        self.worker_id = settings.effective_worker_id
        self.stats = DaemonStats()
        self.log = structlog.get_logger("jobrunner").bind(worker_id=self.worker_id)
        max_left_behind = settings.max_abandoned_handlers or settings.concurrency
        self.in_flight = InFlight(settings.concurrency, settings.lease_seconds, max_left_behind=max_left_behind)
        self.metrics = DaemonMetrics(MetricLabels.for_daemon(settings, registry.job_types()))
        self.metrics.slots.set(settings.concurrency)
        for sampler in self.samplers:  # a series from the start: "no replica samples it" is visible
            self.metrics.plugin_sampler_leader.labels(sampler.name).set(0)
        self.metrics.in_flight.set_function(lambda: self.in_flight.running)
        self.metrics.handlers_abandoned.set_function(lambda: self.in_flight.left_behind)
        self.metrics.listening.set_function(lambda: 1 if self.listener is not None and self.listener.listening else 0)
        self.ready = asyncio.Event()
        # the pipeline's parts, built once the database answers
        self.store: JobStore | None = None
        self.fetcher: Fetcher | None = None
        self.executor: Executor | None = None
        self.listener: NotificationListener | None = None
        self.ops_server: OpsServer | None = None
        self._stopping = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._wakeup = asyncio.Event()  # a wake-up notification: the fetcher claims now
        self._systemd = SystemdNotifier()
        # services that stop with the claiming (the others go on through the drain)
        self._stop_first: list[PeriodicService] = []

    # -- control -------------------------------------------------------------------------

    def request_stop(self, *, immediately: bool = False) -> None:
        if self._stopping.is_set() and not immediately:
            immediately = True  # a second request means now
        if not self._stopping.is_set():
            self.log.info(
                "stopping: no new jobs will be claimed",
                running=self.in_flight.running,
                grace_seconds=self.settings.shutdown_grace,
            )
            self._systemd.stopping()
        self._stopping.set()
        for service in self._stop_first:
            service.stop()
        self._wakeup.set()
        self.in_flight.freed.set()  # the fetcher and the drain wait on it
        if immediately and not self._stop_now.is_set():
            self.log.warning("stopping now: running jobs are handed back", running=self.in_flight.running)
            self._stop_now.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> DaemonStats:
        """Run until stopped (or, in burst mode, until nothing is runnable). Returns the stats."""
        s = self.settings
        init_error_reporting(s)  # Sentry, when SENTRY_DSN is set
        # masked from errors, logs and events; `jobrunner run` registered them already, an
        # application embedding the daemon has not
        register_environment_secrets()
        register_settings_secrets(s)
        startup = Startup(s, self.database_url, self._stopping, self.log, self.metrics.database_errors)
        pools = await startup.open_pools()
        if pools is None:
            return self.stats  # stopped while the database was away
        pool, handler_pool = pools
        try:
            fetcher, executor, completer, services = self._build(pool, handler_pool)
            await fetcher.ensure_limit_state()
            log_start(
                self.log, s, self.registry, self.database_url, listening=self.listener is not None, burst=self.burst
            )
            self.ops_server = await start_ops_endpoint(
                s, self.metrics, self.is_healthy, self.readiness, self.log, self.database_url
            )
            self.ready.set()
            self._systemd.ready()
            try:
                await fetcher.run()
                await self._drain(executor, completer)
            finally:
                if self.ops_server is not None:
                    await self.ops_server.close()
                for task in services:
                    task.cancel()
                await asyncio.gather(*services, return_exceptions=True)
        finally:
            if self.in_flight.left_behind:
                # a handler that ignores cancellation may hold a connection for good
                handler_pool.terminate()
            await asyncio.gather(close_pool(handler_pool), close_pool(pool))
        self.log.info("daemon stopped", **vars(self.stats))
        return self.stats

    def _build(
        self, pool: asyncpg.Pool, handler_pool: asyncpg.Pool
    ) -> tuple[Fetcher, Executor, BatchCompleter, list[asyncio.Task[None]]]:
        """The pipeline's parts, wired, and their services started."""
        s, log, in_flight, metrics = self.settings, self.log, self.in_flight, self.metrics
        store = self.store = JobStore(pool, s.schema_name, claim_max_bytes=s.claim_max_bytes)
        completer = BatchCompleter(store, in_flight, self.stats, metrics, log)
        client = AsyncClient(handler_pool, s.schema_name)
        executor = self.executor = Executor(
            self.registry,
            handler_pool,
            client,
            store,
            s,
            in_flight,
            completer,
            log,
            stopping=self._stopping,
            usage_sink=metrics.usage,
        )
        lease_keeper = LeaseKeeper(store, in_flight, executor, completer, self.stats, metrics, s, log)
        fetcher = self.fetcher = Fetcher(
            store,
            self.registry,
            s,
            in_flight,
            executor,
            self.stats,
            metrics,
            log,
            worker_id=self.worker_id,
            burst=self.burst,
            stopping=self._stopping,
            wakeup=self._wakeup,
        )
        self._stop_first = [
            PrefetchExpiry(in_flight, completer, fetcher.prefetch, log),
            *maintenance_services(store, s, self.worker_id, metrics, log, pool, handler_pool, self.samplers),
        ]
        services = [*self._stop_first, *lease_keeper.services, Watchdog(self._systemd, self.is_healthy, log)]
        tasks = [asyncio.create_task(completer.run(), name="completer")]
        tasks += [asyncio.create_task(service.run(), name=service.name) for service in services]
        self.listener = NotificationListener.for_daemon(
            s,
            self.database_url,
            self.listen_url,
            self._wakeup,
            self._stopping,
            log,
            lease_keeper.cancel_requests.hint,
            metrics.database_errors,
        )
        if self.listener is not None:
            tasks.append(asyncio.create_task(self.listener.run(), name="listener"))
        if self._stopping.is_set():  # asked to stop while starting
            for service in self._stop_first:
                service.stop()
        return fetcher, executor, completer, tasks

    # -- health and readiness ------------------------------------------------------------

    def is_healthy(self) -> bool:
        """The event loop runs, the fetch loop is not wedged (it turns at least every poll), and
        fewer than max_abandoned_handlers handlers run on after the daemon stopped waiting."""
        if not self.ready.is_set() or self._stopping.is_set() or self.fetcher is None:
            return self.ready.is_set()
        if self.in_flight.too_many_left_behind:
            return False
        idle_for = asyncio.get_running_loop().time() - self.fetcher.last_turn
        # a full house legitimately parks the fetch loop until a slot frees
        return idle_for < max(60.0, 3 * self.settings.poll_interval) or self.fetcher.free_slots(0) == 0

    async def readiness(self) -> str | None:
        """None unless stopping; whether the database answers with no migration pending is the
        ops endpoint's readiness probe's to check (daemon/readiness.py), never on this pool."""
        return "stopping" if self._stopping.is_set() else None

    # -- shutdown ------------------------------------------------------------------------

    async def _drain(self, executor: Executor, completer: BatchCompleter) -> None:
        """The jobs that never started go back, the running ones get shutdown_grace to finish
        (none after a second stop request), then the rest are handed back; the outcomes must be
        committed before we close (retries reconnect on their own)."""
        grace = self.settings.shutdown_grace
        await executor.drain(grace, self._stop_now)
        try:
            await asyncio.wait_for(completer.wait_idle(), timeout=max(5.0, grace))
        except TimeoutError:
            self.log.error(
                "could not write every outcome before exiting; their leases will expire and they will run again",
                unwritten=completer.backlog,
            )
