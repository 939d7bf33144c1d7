"""The daemon: claim batches, run handlers, write outcomes back, keep leases alive, stop cleanly.

NOTIFY ─► fetch loop ─claim_batch─► executor tasks ─► completer ─► record_outcomes
             ▲  poll                     ▲ heartbeat (extend_leases)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
import structlog

from jobrunner.client import AsyncClient
from jobrunner.daemon.backoff import Backoff
from jobrunner.daemon.cancel_requests import CancelRequests
from jobrunner.daemon.clock import sleep_unless
from jobrunner.daemon.completer import BatchCompleter
from jobrunner.daemon.executor import JobExecutor
from jobrunner.daemon.listener import NotificationListener
from jobrunner.daemon.maintenance.pruner import FinishedJobPruner
from jobrunner.daemon.maintenance.rescuer import LeaseRescuer
from jobrunner.daemon.maintenance.sampler import QueueDepthSampler
from jobrunner.daemon.maintenance.scheduler import SchedulerService
from jobrunner.daemon.maintenance.vacuumer import HotTableVacuumer
from jobrunner.daemon.ops import start_ops_endpoint
from jobrunner.daemon.outcomes import Cancelled, Completed, Dead, Failed, Outcome, Released, RetryAfter
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.daemon.prefetch import PrefetchDepth
from jobrunner.daemon.wakeups import WakeupSpacing
from jobrunner.database import INTERNAL_POOL_SIZE, TRANSIENT_ERRORS, create_pool
from jobrunner.dsn import DatabaseUrl
from jobrunner.error_reporting import init_error_reporting
from jobrunner.http_server import OpsServer
from jobrunner.job import Job
from jobrunner.limits import GlobalLimits
from jobrunner.metrics import DaemonMetrics, MetricLabels
from jobrunner.migrate import pending_migrations
from jobrunner.redaction import register_environment_secrets, register_settings_secrets
from jobrunner.registry import HandlerRegistry
from jobrunner.settings import Settings
from jobrunner.store import JobStore, claim_order
from jobrunner.systemd_notify import SystemdNotifier


class NotMigrated(RuntimeError):
    pass


@dataclass
class DaemonStats:
    """What this process committed (counted after the write, never before)."""

    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    cancelled: int = 0
    lost_leases: int = 0

    def count(self, outcome: Outcome) -> None:
        """An outcome written."""
        match outcome:
            case Completed():
                self.completed += 1
            case RetryAfter():
                self.retried += 1
            case Failed():
                self.failed += 1
            case Dead():
                self.dead += 1
            case Cancelled():
                self.cancelled += 1
            case Released():
                self.released += 1


class _Waiting(NamedTuple):
    job: Job
    since: float  # event-loop time its claim was sent (its lease started no earlier)


# a job's task is named after it (the deadline of a timed-out handler finds it by name)
_TASK_PREFIX = "job-"


@dataclass
class _Running:
    job: Job
    task: asyncio.Task[None] = field(init=False)
    # why we cancelled it, when we did: "shutdown" hands it back, "lease" drops it, "cancel"
    # ends it cancelled, "timeout" (its deadline passed) spends its attempt
    cancel_reason: str | None = None
    # it did not stop within cancel_grace of being cancelled: its job was settled without it
    abandoned: bool = False
    # the cancel_grace timer armed at its first cancellation, cancelled when the task ends
    grace_timer: asyncio.TimerHandle | None = None


class Daemon:
    def __init__(
        self,
        settings: Settings,
        registry: HandlerRegistry,
        database_url: DatabaseUrl,
        listen_url: DatabaseUrl | None = None,
        *,
        burst: bool = False,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.database_url = database_url
        self.listen_url = listen_url
        self.burst = burst
        self.worker_id = settings.effective_worker_id
        self.stats = DaemonStats()
        self.log = structlog.get_logger("jobrunner").bind(worker_id=self.worker_id)
        self._stopping = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._running: dict[int, _Running] = {}
        # claimed ahead of a free slot (JOBRUNNER_PREFETCH), started in claim order as slots free
        self._waiting: dict[int, _Waiting] = {}
        self._prefetch = PrefetchDepth(
            settings.prefetch,
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            ttl=settings.prefetch_ttl,
        )
        # claimed and not yet settled (outcome not committed), heartbeated: job id -> job
        self._held: dict[int, Job] = {}
        # the loop run() runs in: asyncio.create_task() and get_running_loop() look it up on
        # every call (a getpid() each), twice per job on the hot path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: asyncpg.Pool | None = None
        self._store: JobStore | None = None
        self._completer: BatchCompleter | None = None
        self._executor: JobExecutor | None = None
        self.listener: NotificationListener | None = None
        self.ready = asyncio.Event()
        self._systemd = SystemdNotifier()
        self.metrics = DaemonMetrics(MetricLabels.for_daemon(settings, registry.job_types()))
        self.metrics.slots.set(settings.concurrency)
        self.metrics.in_flight.set_function(lambda: len(self._running))
        self.metrics.listening.set_function(lambda: 1 if self.listener is not None and self.listener.listening else 0)
        self.ops_server: OpsServer | None = None
        # job types with global limits: the handler's, overridden by settings
        self._limits: dict[str, GlobalLimits] = {
            job_type: h.limits for job_type in registry.job_types() if (h := registry.get(job_type)) and h.limits
        }
        self._limits.update(settings.limits)
        # claimed apart from the fast claim: types with global or per-process limits (set in run)
        self._limited_types: list[str] = []
        self._limited_first = False
        # the queues claimed fast, and those claimed one by one under their global limits
        self._free_queues = [q for q in settings.queues if q not in settings.queue_limits]
        self._limited_queues = [q for q in settings.queues if q in settings.queue_limits]
        # the fetch loop's last turn: a watchdog beat only while it keeps turning
        self._last_fetch_turn = 0.0
        # event-loop time the last heartbeat that succeeded was sent: every lease it renewed
        # runs at least until then + lease_seconds
        self._leases_renewed_at = 0.0
        self._wakeups = WakeupSpacing(settings.notify_min_interval)
        self._cancel_requests: CancelRequests | None = None
        # handlers that did not stop when cancelled, still running after their jobs were settled:
        # task -> its job type. Each may still hold its type's max_concurrency slot, so claims
        # count them; past max_abandoned_handlers the daemon stops claiming and is unhealthy.
        self._abandoned: dict[asyncio.Task[None], str] = {}
        self._maintenance: list[PeriodicService] = []
        self._max_abandoned = settings.max_abandoned_handlers or settings.concurrency
        self.metrics.handlers_abandoned.set_function(lambda: len(self._abandoned))

    # -- control -------------------------------------------------------------------------

    def request_stop(self, *, immediately: bool = False) -> None:
        if self._stopping.is_set() and not immediately:
            immediately = True  # a second request means now
        if not self._stopping.is_set():
            self.log.info(
                "stopping: no new jobs will be claimed",
                running=len(self._running),
                grace_seconds=self.settings.shutdown_grace,
            )
            self._systemd.stopping()
        self._stopping.set()
        for service in self._maintenance:
            service.stop()
        self._wakeup.set()
        self._slot_freed.set()
        if immediately and not self._stop_now.is_set():
            self.log.warning("stopping now: running jobs are handed back", running=len(self._running))
            self._stop_now.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> DaemonStats:
        """Run until stopped (or, in burst mode, until nothing is runnable). Returns the stats."""
        init_error_reporting(self.settings)  # Sentry, when SENTRY_DSN is set
        # masked from errors, logs and events; `jobrunner run` registered them already, an
        # application embedding the daemon has not
        register_environment_secrets()
        register_settings_secrets(self.settings)
        self._loop = asyncio.get_running_loop()
        pool = await self._connect()
        if pool is None:
            return self.stats
        self._pool = pool
        schema = self.settings.schema_name
        # handlers' connections: opened only when a handler asks for one
        handler_pool = await create_pool(
            self.database_url,
            min_size=0,
            max_size=self.settings.effective_pool_max_size,
            connect_timeout=self.settings.connect_timeout,
            idle_timeout=self.settings.pool_idle_timeout,
        )
        try:
            missing = await self._pending_migrations(pool)
            if missing is None:
                return self.stats  # stopped while the database was away
            if missing:
                raise NotMigrated(
                    f"the database needs migrations first (run `jobrunner migrate`): {', '.join(missing)}"
                )
            self._store = JobStore(pool, schema, claim_max_bytes=self.settings.claim_max_bytes)
            client = AsyncClient(handler_pool, schema)
            self._executor = JobExecutor(
                self.registry,
                handler_pool,
                client,
                self.settings.default_timeout,
                self.log,
                self.metrics.usage,
                self._store,
                self.settings,
                on_timeout=self._on_timeout,
            )
            self._limited_types = sorted(set(self._executor.local_limits) | set(self._limits))
            self._completer = BatchCompleter(self._store, self._on_committed, self.log, self.metrics.database_errors)
            services = self._start_services()
            self.log.info(
                "daemon started",
                queues=self.settings.queues,
                concurrency=self.settings.concurrency,
                job_types=self.registry.job_types(),
                listen=self.listener is not None,
                database=self.database_url.redacted(),
                burst=self.burst,
            )
            if unworked := sorted(set(self.settings.queue_limits) - set(self.settings.queues)):
                # harmless where other replicas work them; a typo otherwise means no limit
                self.log.warning("queue limits set for queues this daemon does not work", queues=unworked)
            for job_type, problem in self.registry.configuration_problems().items():
                self.log.warning(
                    "handler not configured: its jobs will fail until it is", job_type=job_type, problem=problem
                )
            self.ops_server = await start_ops_endpoint(
                self.settings, self.metrics, self.is_healthy, self.readiness, self.log, self.database_url
            )
            self.ready.set()
            self._systemd.ready()
            try:
                await self._fetch_loop()
                await self._drain()
            finally:
                if self.ops_server is not None:
                    await self.ops_server.close()
                for task in services:
                    task.cancel()
                await asyncio.gather(*services, return_exceptions=True)
        finally:
            if self._abandoned:
                # a handler that ignores cancellation may hold a connection for good
                handler_pool.terminate()
            await asyncio.gather(_close_pool(handler_pool), _close_pool(pool))
        self.log.info("daemon stopped", **vars(self.stats))
        return self.stats

    async def _pending_migrations(self, pool: asyncpg.Pool) -> list[str] | None:
        """The start-up check, retried while the database is away (a restart, a cut connection):
        a replica started at the wrong moment must not exit. None when stopped meanwhile."""
        backoff = Backoff("startup", self.log, self.metrics.database_errors)
        while not self._stopping.is_set():
            try:
                return await pending_migrations(pool, self.settings.schema_name)
            except TRANSIENT_ERRORS as exc:
                await sleep_unless(self._stopping, backoff.failed("database unreachable at start, retrying", exc))
        return None

    async def _connect(self) -> asyncpg.Pool | None:
        backoff = Backoff("startup", self.log, self.metrics.database_errors)
        while not self._stopping.is_set():
            try:
                return await create_pool(
                    self.database_url,
                    min_size=self.settings.pool_min_size,
                    max_size=INTERNAL_POOL_SIZE,
                    connect_timeout=self.settings.connect_timeout,
                    idle_timeout=self.settings.pool_idle_timeout,
                    # only our own statements run here; handlers get the other pool
                    reset_sessions=False,
                )
            except TRANSIENT_ERRORS as exc:
                delay = backoff.failed("database unreachable, retrying", exc, database=self.database_url.redacted())
                await sleep_unless(self._stopping, delay)
        return None

    def _start_services(self) -> list[asyncio.Task[None]]:
        assert self._store is not None and self._completer is not None
        s = self.settings
        self._cancel_requests = CancelRequests(
            self._store,
            self._held_ids,
            self._holds,
            self.cancel_local,
            poll_interval=s.cancel_poll_interval,
            min_interval=s.notify_min_interval,
            log=self.log,
            error_counter=self.metrics.database_errors.labels("cancel_poll"),
        )
        errors = self.metrics.database_errors
        self._maintenance = [
            LeaseRescuer(self._store, s.rescue_interval, self.log, self.metrics),
            QueueDepthSampler(self._store, self.metrics, self.worker_id, s.sample_interval, self.log),
            FinishedJobPruner(self._store, s.retention_seconds, s.prune_interval, self.log, errors),
            HotTableVacuumer(
                self._store, self.worker_id, s.vacuum, s.vacuum_interval, s.vacuum_min_dead_rows, self.log, errors
            ),
            SchedulerService.for_daemon(self._store.pool, s, self.worker_id, self.log, errors),
        ]
        services = [
            asyncio.create_task(self._completer.run(), name="completer"),
            asyncio.create_task(self._cancel_requests.run(), name="cancel-requests"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
            asyncio.create_task(self._prefetch_expiry_loop(), name="prefetch-expiry"),
            *(asyncio.create_task(service.run(), name=service.name) for service in self._maintenance),
        ]
        listen_url = self.listen_url or (None if self.database_url.behind_pooler else self.database_url)
        if s.listen and listen_url is not None:
            self.listener = NotificationListener(
                listen_url,
                s.schema_name,
                s.queues,
                self._wakeup,
                self._stopping,
                s.connect_timeout,
                self.log,
                on_cancel_hint=self._cancel_requests.hint,
                errors=self.metrics.database_errors,
            )
            services.append(asyncio.create_task(self.listener.run(), name="listener"))
        elif s.listen:
            self.log.warning(
                "database_url is a transaction pooler and no listen_database_url is set: polling only",
                poll_interval=s.poll_interval,
            )
        return services

    # -- fetching ------------------------------------------------------------------------

    def _free_slots(self, prefetch: int) -> int:
        """How many jobs the next claim may take: free slots plus the prefetch not yet filled."""
        s = self.settings
        if len(self._abandoned) >= self._max_abandoned:
            return 0  # too many handlers left running: claim nothing more (see is_healthy)
        room = s.concurrency + prefetch - len(self._running) - len(self._waiting)
        # cap claimed-but-unsettled jobs too, so a stuck completer stops the claiming
        return max(0, min(room, 2 * s.concurrency + prefetch - len(self._held)))

    async def _fetch_loop(self) -> None:
        assert self._store is not None and self._executor is not None
        s = self.settings
        backoff = Backoff("fetcher", self.log, self.metrics.database_errors)
        loop = asyncio.get_running_loop()
        # the claim about to be made was asked for by a wake-up notification
        notified = False
        while not self._stopping.is_set():
            self._last_fetch_turn = now = loop.time()
            prefetch = self._prefetch.depth(now)
            free = self._free_slots(prefetch)
            # with jobs still waiting, refill the prefetch only once half of it is free: fewer,
            # larger claims rather than one claim per finished job
            if free == 0 or (self._waiting and free < (prefetch + 1) // 2):
                self._slot_freed.clear()
                await self._slot_freed.wait()
                notified = False
                continue
            limit = min(free, s.batch_size)
            self._wakeup.clear()
            try:
                jobs = await self._claim(limit)
                self._prefetch.claimed(now, loop.time())
            except TRANSIENT_ERRORS as exc:
                await sleep_unless(self._stopping, backoff.failed("claiming jobs failed, retrying", exc))
                continue
            except Exception as exc:
                delay = backoff.failed("claiming jobs failed unexpectedly, retrying", exc, unexpected=True)
                await sleep_unless(self._stopping, delay)
                continue
            backoff.succeeded("database reachable again")
            self._wakeups.claimed(bool(jobs), notified, now)
            notified = False
            lapsed = bool(jobs) and self._lease_lapsed(now)
            for job in jobs:
                self._hold(job, now, start=not lapsed)
            if lapsed:
                self._give_back_lapsed(jobs)
                continue
            if len(jobs) == limit or self._store.filled_byte_budget(jobs):
                continue  # there may be more right away
            if self.burst and not jobs and not self._held:
                # wait for what becomes runnable within burst_wait: our own retries with a short
                # backoff, jobs a global limit holds back for a moment
                wait = await self._seconds_until_runnable()
                if wait is None or wait > s.burst_wait:
                    self.log.info("burst: no runnable job left", next_runnable_in=wait)
                    return
                await sleep_unless(self._stopping, min(max(wait, 0.001), s.poll_interval))
                continue
            if self.burst:
                # wait for our own jobs to settle (their retries may be runnable at once), then
                # look again: a short claim, too, means the queue ran dry, and waiting for a
                # NOTIFY that never comes cost a whole poll interval at the end of a drain
                self._slot_freed.clear()
                await sleep_unless(self._slot_freed, s.poll_interval)
                continue
            notified = await sleep_unless(self._wakeup, s.poll_interval)
            if notified and (delay := self._wakeups.delay(loop.time())) > 0:
                # a NOTIFY only says "look": a flood of them must not become a claim storm
                await sleep_unless(self._stopping, delay)

    async def _claim(self, limit: int) -> list[Job]:
        """One fast claim for the queues and job types without limits, and one claim per limited
        part: per limited type (per-process max_concurrency, global limits) in the queues
        without limits, per limited queue for its other types, and per limited type within each
        limited queue. Which side goes first alternates, so neither can starve the other.
        Returned in the order to start them: limited jobs first, each part in claim order."""
        s = self.settings
        self._limited_first = not self._limited_first
        # limited parts take only slots free now: a job waiting in the prefetch would hold a
        # global slot (it is `running` in the database) and a spent token before it starts
        free_now = max(0, s.concurrency - len(self._running) - len(self._waiting))
        if self._limited_first:
            limited = await self._claim_limited(min(limit, free_now))
            unlimited = await self._claim_unlimited(limit - len(limited))
        else:
            unlimited = await self._claim_unlimited(limit)
            limited = await self._claim_limited(min(limit, free_now) - len(unlimited))
        # the limited ones first: they fit the free slots and start now, the prefetch waits.
        # The unlimited part is one claim, which the store returns in claim order already.
        limited.sort(key=claim_order)
        return limited + unlimited

    async def _claim_unlimited(self, limit: int) -> list[Job]:
        if limit <= 0 or not self._free_queues:
            return []
        assert self._store is not None
        return await self._store.claim_batch(
            self._free_queues, self.worker_id, limit, self.settings.lease_seconds, self._limited_types
        )

    async def _claim_limited(self, limit: int) -> list[Job]:
        assert self._store is not None and self._executor is not None
        s = self.settings
        limited_types = self._limited_types
        jobs: list[Job] = []
        if limit <= 0 or (not limited_types and not self._limited_queues):
            return jobs
        local = self._executor.local_limits
        by_type = Counter(job.job_type for job in self._held.values())
        # an abandoned handler holds its type's max_concurrency slot until it really ends: a job
        # claimed into that slot would wait for it, `running` and heartbeated, for good
        by_type.update(self._abandoned.values())
        for queue in [None, *self._limited_queues]:
            queues = self._free_queues if queue is None else [queue]
            if not queues:
                continue
            # within the free queues the unlimited types are the fast claim's
            job_types: list[str | None] = [*limited_types] if queue is None else [None, *limited_types]
            for job_type in job_types:
                room = limit - len(jobs)
                if job_type in local:
                    room = min(room, local[job_type] - by_type[job_type])
                if room <= 0:
                    continue
                if queue is None and job_type not in self._limits:
                    claimed = await self._store.claim_batch(
                        queues, self.worker_id, room, s.lease_seconds, (), only_type=job_type
                    )
                else:
                    claimed = await self._store.claim_within_limits(
                        queues,
                        self.worker_id,
                        room,
                        s.lease_seconds,
                        job_type=job_type,
                        skip_types=limited_types,
                        type_limits=self._limits.get(job_type) if job_type else None,
                        queue=queue,
                        queue_limits=s.queue_limits.get(queue) if queue else None,
                    )
                by_type.update(job.job_type for job in claimed)
                jobs += claimed
        return jobs

    async def _seconds_until_runnable(self) -> float | None:
        assert self._store is not None
        try:
            return await self._store.seconds_until_runnable(self.settings.queues)
        except TRANSIENT_ERRORS:
            return 0.0  # ask again after the next poll

    def _hold(self, job: Job, claimed_at: float, *, start: bool = True) -> None:
        """A job just claimed: run it if a slot is free, else keep it waiting for one (and when
        stopping, keep it for the drain to hand back). With start=False only recorded as held."""
        self.stats.claimed += 1
        self.metrics.job_claimed(job.job_type, job.queue, job.waited_seconds)
        self._held[job.id] = job
        if not start:
            return
        if len(self._running) < self.settings.concurrency and not self._stopping.is_set():
            self._start(job)
        else:
            self._waiting[job.id] = _Waiting(job, claimed_at)

    def _lease_lapsed(self, claimed_at: float) -> bool:
        """Whether a lease that started no earlier than `claimed_at` (and was last renewed by
        the heartbeat sent at `_leases_renewed_at`) may have run out: a claim or a process held
        up for longer than the lease. Another replica may have rescued and started the job."""
        assert self._loop is not None
        started = max(claimed_at, self._leases_renewed_at)
        return self._loop.time() - started >= self.settings.lease_seconds

    def _give_back_lapsed(self, jobs: Sequence[Job]) -> None:
        """Hand back jobs whose lease may have run out instead of running them: the write is
        fenced on the attempt, so it is discarded if the job was rescued meanwhile."""
        assert self._completer is not None
        self.log.warning(
            "claimed jobs handed back unstarted: their lease may have run out before they could start",
            jobs=len(jobs),
            lease_seconds=self.settings.lease_seconds,
        )
        for job in jobs:
            self._completer.submit(Released.of(job))

    def _start(self, job: Job) -> None:
        assert self._loop is not None
        running = self._running[job.id] = _Running(job)
        task = running.task = self._loop.create_task(self._execute(running), name=f"{_TASK_PREFIX}{job.id}")
        task.add_done_callback(functools.partial(self._task_done, running))

    def _start_waiting(self) -> None:
        while self._waiting and len(self._running) < self.settings.concurrency and not self._stopping.is_set():
            waiting = self._waiting.pop(next(iter(self._waiting)))
            if self._lease_lapsed(waiting.since):
                self._give_back_lapsed([waiting.job])
                continue
            self._start(waiting.job)

    async def _execute(self, running: _Running) -> None:
        assert self._executor is not None
        job = running.job
        outcome: Outcome | None
        try:
            outcome = await self._executor.execute(job)
        except asyncio.CancelledError:
            outcome = None if running.abandoned else self._interrupted(running)
        except GeneratorExit:
            if running.abandoned:
                raise  # closed by the garbage collector: a task left behind when the loop closed
            self.log.exception("executor failed on a job", job_id=job.id, job_type=job.job_type)
            outcome = self._executor.crashed(job, GeneratorExit())
        except BaseException as exc:  # whatever escapes the executor (a payload model's SystemExit…)
            self.log.exception("executor failed on a job", job_id=job.id, job_type=job.job_type)
            outcome = self._executor.crashed(job, exc)
        if running.abandoned:
            # its job was settled when it did not stop: how it ended at last changes nothing
            self.log.warning(
                "a handler jobrunner had stopped waiting for has ended",
                job_id=job.id,
                job_type=job.job_type,
                attempt=job.attempt,
            )
            return
        self._running.pop(job.id, None)
        self._settle(job, outcome)

    def _task_done(self, running: _Running, task: asyncio.Task[None]) -> None:
        if running.grace_timer is not None:
            running.grace_timer.cancel()  # it stopped: nothing to wait for
            running.grace_timer = None
        if running.abandoned:
            # a handler left behind has ended at last: its type's slot is free, and claiming
            # resumes if the bound had stopped it
            if self._abandoned.pop(task, None) is not None:
                self._slot_freed.set()
            return
        # a task cancelled before its first step never ran `_execute`, not even its `finally`:
        # settle its job here, or it would stay `running` under our heartbeat for good
        if self._running.get(running.job.id) is running:
            del self._running[running.job.id]
            self._settle(running.job, self._interrupted(running))

    def _interrupted(self, running: _Running) -> Outcome | None:
        """The outcome of a job whose task was cancelled, by the reason the daemon cancelled it."""
        if running.cancel_reason == "lease":
            return None  # the job is someone else's now: write nothing
        if running.cancel_reason == "cancel":
            return Cancelled.of(running.job)
        if running.cancel_reason == "shutdown":
            return Released.of(running.job)
        assert self._executor is not None
        if running.cancel_reason == "timeout":
            # it ignored its deadline's cancel and stopped at a later one (a shutdown's): still
            # a timeout, or a handler that hangs during each rolling deploy would retry for ever
            return self._executor.timed_out(running.job)
        # not cancelled by the daemon (the handler cancelled its own task): a failed attempt
        return self._executor.unrequested_cancel(running.job)

    # -- handlers that do not stop -------------------------------------------------------------

    def _on_timeout(self, task: asyncio.Task[object]) -> None:
        """A deadline cancelled this job's task: give the handler cancel_grace to stop."""
        job_id = task.get_name().removeprefix(_TASK_PREFIX)
        running = self._running.get(int(job_id)) if job_id.isdigit() else None
        if running is not None and running.task is task:
            running.cancel_reason = running.cancel_reason or "timeout"
            self._stop_waiting_later(running)

    def _stop_waiting_later(self, running: _Running) -> None:
        """Abandon the handler unless it stops within cancel_grace of its first cancellation."""
        assert self._loop is not None
        if running.grace_timer is None:
            running.grace_timer = self._loop.call_later(self.settings.cancel_grace, self._abandon, running)

    def _abandon(self, running: _Running) -> None:
        """The handler did not stop within cancel_grace of being cancelled (it swallows
        CancelledError, or its cleanup hangs): settle its job without it and free its slot. Its
        coroutine goes on in the background: asyncio cannot stop a coroutine that ignores
        cancellation. The job is no longer heartbeated once its outcome is written, and whatever
        the handler does later is never written (outcomes are fenced on id, attempt, running).
        The outcome follows the latest reason: a lease lost after a timeout writes nothing."""
        job = running.job
        if running.grace_timer is not None:
            running.grace_timer.cancel()  # the drain got here first, or this is the timer itself
            running.grace_timer = None
        if running.task.done() or self._running.get(job.id) is not running:
            return
        assert self._executor is not None
        running.abandoned = True
        del self._running[job.id]
        self._abandoned[running.task] = job.job_type
        reason = running.cancel_reason or "shutdown"
        outcome: Outcome | None
        if reason == "timeout":
            outcome = self._executor.timed_out_without_stopping(job, self.settings.cancel_grace)
        else:
            outcome = self._interrupted(running)
        self.log.error(
            "handler did not stop after it was cancelled",
            job_id=job.id,
            job_type=job.job_type,
            attempt=job.attempt,
            reason=reason,
            waited_seconds=self.settings.cancel_grace,
            outcome=outcome.name if outcome is not None else "dropped (lease lost)",
            still_running_in_background=len(self._abandoned),
        )
        if len(self._abandoned) >= self._max_abandoned:
            self.log.error(
                "too many handlers left running in the background: claiming stopped, /healthz reports"
                " unhealthy so the process is restarted",
                abandoned=len(self._abandoned),
                max_abandoned_handlers=self._max_abandoned,
            )
        self._settle(job, outcome)

    def _settle(self, job: Job, outcome: Outcome | None) -> None:
        assert self._completer is not None
        self._prefetch.finished()
        self._slot_freed.set()
        self._start_waiting()
        if outcome is None:
            self._held.pop(job.id, None)
        else:
            self._completer.submit(outcome)

    def _on_committed(self, outcomes: Sequence[Outcome], written: set[int]) -> None:
        released_queues: set[str] = set()
        for outcome in outcomes:
            self._held.pop(outcome.job_id, None)
            if outcome.job_id not in written:
                self.stats.lost_leases += 1
                self.metrics.lost_leases.inc()
                self.log.warning(
                    "outcome discarded: the job's lease was lost before it was written",
                    job_id=outcome.job_id,
                    job_type=outcome.job_type,
                    attempt=outcome.attempt,
                )
                continue
            self.stats.count(outcome)
            self.metrics.job_finished(outcome.job_type, outcome.queue, outcome.name, outcome.duration)
            if type(outcome) is Released:
                released_queues.add(outcome.queue)
        self._slot_freed.set()
        if released_queues and self._store is not None:
            # let other replicas pick the handed-back jobs up now rather than at their next poll
            asyncio.get_running_loop().create_task(self._notify_quietly(sorted(released_queues)))

    async def _notify_quietly(self, queues: list[str]) -> None:
        assert self._store is not None
        with contextlib.suppress(Exception):
            await self._store.notify_queues(queues)

    # -- leases --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        assert self._store is not None
        interval = self.settings.effective_heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            held = {job_id: job.attempt for job_id, job in self._held.items()}
            if not held:
                continue
            sent = asyncio.get_running_loop().time()
            try:
                still_ours = await self._store.extend_leases(held, self.settings.lease_seconds)
            except Exception as exc:
                self.metrics.database_errors.labels("heartbeat").inc()
                # one missed beat is fine: the interval is at most half the lease
                self.log.warning("heartbeat failed, will retry", error=repr(exc), jobs=len(held))
                continue
            self._leases_renewed_at = sent
            for job_id in held.keys() - still_ours:
                waiting = self._waiting.get(job_id)
                if waiting is not None and waiting.job.attempt == held[job_id]:
                    # never started: forget it, its next holder runs it
                    del self._waiting[job_id]
                    self._held.pop(job_id, None)
                    self._slot_freed.set()
                    self.log.warning("lease lost: job was taken back before it started", job_id=job_id)
                    self.stats.lost_leases += 1
                    self.metrics.lost_leases.inc()
                    continue
                running = self._running.get(job_id)
                still_held = self._held.get(job_id)
                if running is None or still_held is None or still_held.attempt != held[job_id]:
                    continue  # settled while we were extending
                if running.cancel_reason == "lease":
                    continue  # seen at an earlier beat: its handler has not stopped yet
                self.log.warning(
                    "lease lost: job was taken back, cancelling its handler",
                    job_id=job_id,
                    job_type=running.job.job_type,
                    attempt=running.job.attempt,
                )
                self.stats.lost_leases += 1
                self.metrics.lost_leases.inc()
                running.cancel_reason = "lease"
                running.task.cancel()
                self._stop_waiting_later(running)

    def is_healthy(self) -> bool:
        """The event loop runs, the fetch loop is not wedged (it turns at least every poll), and
        fewer than max_abandoned_handlers handlers run on after the daemon stopped waiting."""
        if not self.ready.is_set() or self._stopping.is_set():
            return self.ready.is_set()
        if len(self._abandoned) >= self._max_abandoned:
            return False
        idle_for = asyncio.get_running_loop().time() - self._last_fetch_turn
        # a full house legitimately parks the fetch loop until a slot frees
        return idle_for < max(60.0, 3 * self.settings.poll_interval) or self._free_slots(0) == 0

    async def _watchdog_loop(self) -> None:
        interval = self._systemd.watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            if self.is_healthy():
                self._systemd.watchdog()
            else:
                self.log.error("fetch loop looks wedged: withholding the systemd watchdog beat")

    # -- prefetch ----------------------------------------------------------------------------

    async def _prefetch_expiry_loop(self) -> None:
        """Hand back jobs that waited prefetch_ttl for a slot (the slots are busy with longer
        jobs than the prefetch was sized for): any replica with a free slot may run them."""
        if not self._prefetch.enabled:
            return
        assert self._completer is not None
        ttl = self._prefetch.ttl
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ttl / 2)
            if self._stopping.is_set():
                return  # the drain hands back what waits
            now = loop.time()
            # claim order is waiting order: the expired ones are at the front
            expired: list[Job] = []
            for waiting in self._waiting.values():
                if now - waiting.since < ttl:
                    break
                expired.append(waiting.job)
            if not expired:
                continue
            for job in expired:
                del self._waiting[job.id]
                self._completer.submit(Released.of(job))
            self._prefetch.handed_back(now)
            self._slot_freed.set()
            self.log.info("handed back jobs that waited too long for a slot", jobs=len(expired), waited_seconds=ttl)

    # -- cancellation ----------------------------------------------------------------------

    def cancel_local(self, job_id: int) -> bool:
        """Stop the handler of job_id if it runs here (or drop it if it waits for a slot here);
        the job then ends `cancelled`. Only for a request the table confirmed (CancelRequests)."""
        waiting = self._waiting.pop(job_id, None)
        if waiting is not None:
            assert self._completer is not None
            self.log.info("cancelling waiting job on request", job_id=job_id, job_type=waiting.job.job_type)
            self._completer.submit(Cancelled.of(waiting.job))
            self._slot_freed.set()
            return True
        running = self._running.get(job_id)
        # a request outranks a timeout: the job was asked to end, so it ends cancelled
        if running is None or running.cancel_reason not in (None, "timeout"):
            return False
        self.log.info("cancelling running job on request", job_id=job_id, job_type=running.job.job_type)
        running.cancel_reason = "cancel"
        running.task.cancel()
        self._stop_waiting_later(running)
        return True

    def _held_ids(self) -> list[int]:
        """The jobs a cancel request can reach here: running, or waiting for a slot."""
        return [*self._running, *self._waiting]

    def _holds(self, job_id: int) -> bool:
        return job_id in self._running or job_id in self._waiting

    # -- readiness ---------------------------------------------------------------------------

    async def readiness(self) -> str | None:
        """None unless stopping; whether the database answers with no migration pending is the
        ops endpoint's readiness probe's to check (daemon/readiness.py), never on this pool."""
        return "stopping" if self._stopping.is_set() else None

    # -- shutdown ------------------------------------------------------------------------

    async def _drain(self) -> None:
        assert self._completer is not None
        if self._waiting:
            # never started: hand them back at once, their attempts not spent
            self.log.info("handing back jobs that had not started", jobs=len(self._waiting))
            for waiting in self._waiting.values():
                self._completer.submit(Released.of(waiting.job))
            self._waiting.clear()
        if self._running and not self._stop_now.is_set():
            self.log.info(
                "waiting for running jobs to finish",
                running=len(self._running),
                grace_seconds=self.settings.shutdown_grace,
            )
            loop = asyncio.get_running_loop()
            grace_ends = loop.time() + self.settings.shutdown_grace
            # every settled (or abandoned) job and a second signal set _slot_freed
            while self._running and not self._stop_now.is_set() and (left := grace_ends - loop.time()) > 0:
                self._slot_freed.clear()
                await sleep_unless(self._slot_freed, left)
        leftover = list(self._running.values())
        for item in leftover:
            item.cancel_reason = item.cancel_reason or "shutdown"
            item.task.cancel()
        if leftover:
            self.log.warning("handing back unfinished jobs", jobs=len(leftover))
            # a handler that ignores its cancellation gets cancel_grace, then is left behind
            await asyncio.wait([item.task for item in leftover], timeout=self.settings.cancel_grace)
            for item in leftover:
                self._abandon(item)
        # the outcomes must be committed before we close; retries reconnect on their own
        try:
            await asyncio.wait_for(self._completer.wait_idle(), timeout=max(5.0, self.settings.shutdown_grace))
        except TimeoutError:
            self.log.error(
                "could not write every outcome before exiting; their leases will expire and they will run again",
                unwritten=self._completer.backlog,
            )


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 5.0)
    except Exception:
        pool.terminate()
