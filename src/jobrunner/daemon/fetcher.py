"""The fetcher: claims jobs when there is room for them, and hands each to the executor.

    NOTIFY / poll / a freed slot ─► claim(limit) ─► hold (in_flight.py) ─► executor.start_or_wait

The claim plan: one claim, one round trip, for the queues and job types without limits and for
every limited part (a type's per-process max_concurrency or global limits, a queue's limits);
when a limited part had a job but no slot free now, the fetcher claims nothing ahead and gives
the next free slot to the limited side. How
much to claim: the free slots plus the prefetch (jobs claimed ahead to wait in the process for a
slot, sized by prefetch.py), capped so a stuck completer stops the claiming. A wake-up
notification only says "look" (wakeups.py spaces the claims a flood of them sets off); polling
runs underneath.
"""

from __future__ import annotations

import asyncio

import structlog

from jobrunner.daemon.backoff import DATABASE_ERRORS, Backoff
from jobrunner.daemon.clock import Clock, sleep_unless
from jobrunner.daemon.completer import BatchCompleter
from jobrunner.daemon.executor import Executor
from jobrunner.daemon.in_flight import InFlight
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.daemon.prefetch import PrefetchDepth
from jobrunner.daemon.stats import DaemonStats
from jobrunner.daemon.wakeups import WakeupSpacing
from jobrunner.database import TRANSIENT_ERRORS
from jobrunner.job import Job
from jobrunner.limits import GlobalLimits
from jobrunner.metrics import DaemonMetrics
from jobrunner.outcomes import Released
from jobrunner.registry import HandlerRegistry
from jobrunner.settings import Settings
from jobrunner.store import ClaimPlan, JobStore, LimitedType


class Fetcher:
    def __init__(
        self,
        store: JobStore,
        handlers: HandlerRegistry,
        settings: Settings,
        in_flight: InFlight,
        executor: Executor,
        stats: DaemonStats,
        metrics: DaemonMetrics,
        log: structlog.typing.FilteringBoundLogger,
        *,
        worker_id: str,
        burst: bool,
        stopping: asyncio.Event,
        wakeup: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._store = store
        self._in_flight = in_flight
        self._executor = executor
        self._stats = stats
        self._metrics = metrics
        self._log = log
        self._burst = burst
        self._stopping = stopping
        # set by a wake-up notification (the listener), a hint to claim now
        self._wakeup = wakeup
        self._clock = Clock()
        self.prefetch = PrefetchDepth(
            settings.prefetch,
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            ttl=settings.prefetch_ttl,
        )
        self._finished_seen = 0  # in_flight.finished_total when the prefetch was last told
        self._wakeups = WakeupSpacing(settings.notify_min_interval)
        # job types with global limits: the handler's, overridden by settings
        self._limits: dict[str, GlobalLimits] = {
            job_type: h.limits for job_type in handlers.job_types() if (h := handlers.get(job_type)) and h.limits
        }
        self._limits.update(settings.limits)
        # claimed apart from the fast claim: types with global or per-process limits
        self._limited_types = sorted(set(executor.local_limits) | set(self._limits))
        self._limited_first = False
        # the last claim's limited parts had a job to take but no slot free now for it
        self._limited_waiting = False
        # the queues claimed fast, and those claimed one by one under their global limits
        self._free_queues = [q for q in settings.queues if q not in settings.queue_limits]
        self._limited_queues = [q for q in settings.queues if q in settings.queue_limits]
        # clock time of the fetch loop's last turn: the daemon is healthy while it keeps turning
        self.last_turn = 0.0

    def free_slots(self, prefetch: int) -> int:
        """How many jobs the next claim may take: free slots plus the prefetch not yet filled."""
        s, in_flight = self.settings, self._in_flight
        if in_flight.too_many_left_behind:
            return 0  # too many handlers left running: claim nothing more (see Daemon.is_healthy)
        room = s.concurrency + prefetch - in_flight.running - in_flight.waiting
        # cap claimed-but-unsettled jobs too, so a stuck completer stops the claiming
        return max(0, min(room, 2 * s.concurrency + prefetch - in_flight.held))

    async def run(self) -> None:
        """Claim until stopped (or, in burst mode, until nothing is runnable)."""
        s, in_flight = self.settings, self._in_flight
        backoff = Backoff("fetcher", self._log, self._metrics.database_errors)
        clock = self._clock
        # the claim about to be made was asked for by a wake-up notification
        notified = False
        while not self._stopping.is_set():
            self.last_turn = now = clock.time()
            # a limited job waits for a slot free now: claim nothing ahead until it has one
            prefetch = 0 if self._limited_waiting else self._prefetch_depth(now)
            free = self.free_slots(prefetch)
            # with jobs still waiting, refill the prefetch only once half of it is free: fewer,
            # larger claims rather than one claim per finished job
            if free == 0 or (in_flight.waiting and free < (prefetch + 1) // 2):
                in_flight.freed.clear()
                await in_flight.freed.wait()
                notified = False
                continue
            limit = min(free, s.batch_size)
            self._wakeup.clear()
            try:
                jobs = await self.claim(limit)
            except TRANSIENT_ERRORS as exc:
                await sleep_unless(self._stopping, backoff.failed("claiming jobs failed, retrying", exc))
                continue
            except Exception as exc:
                delay = backoff.failed("claiming jobs failed unexpectedly, retrying", exc, unexpected=True)
                await sleep_unless(self._stopping, delay)
                continue
            self._tell_prefetch_finished()
            self.prefetch.claimed(now, clock.time())
            backoff.succeeded("database reachable again")
            self._wakeups.claimed(bool(jobs), notified, now)
            notified = False
            self._take(jobs, now)
            if len(jobs) == limit or self._store.filled_byte_budget(jobs):
                continue  # there may be more right away
            if self._limited_waiting:
                # a limited job waits for a slot free now: the next slot to free is its own
                if s.concurrency - in_flight.running - in_flight.waiting > 0:
                    continue
                in_flight.freed.clear()
                await sleep_unless(in_flight.freed, s.poll_interval)
                continue
            if self._burst and not jobs and not in_flight.held:
                # wait for what becomes runnable within burst_wait: our own retries with a short
                # backoff, jobs a global limit holds back for a moment
                wait = await self._seconds_until_runnable()
                if wait is None or wait > s.burst_wait:
                    self._log.info("burst: no runnable job left", next_runnable_in=wait)
                    return
                await sleep_unless(self._stopping, min(max(wait, 0.001), s.poll_interval))
                continue
            if self._burst:
                # wait for our own jobs to settle (their retries may be runnable at once), then
                # look again: a short claim, too, means the queue ran dry, and waiting for a
                # NOTIFY that never comes cost a whole poll interval at the end of a drain
                in_flight.freed.clear()
                await sleep_unless(in_flight.freed, s.poll_interval)
                continue
            notified = await sleep_unless(self._wakeup, s.poll_interval)
            if notified and (delay := self._wakeups.delay(clock.time())) > 0:
                # a NOTIFY only says "look": a flood of them must not become a claim storm
                await sleep_unless(self._stopping, delay)

    def _take(self, jobs: list[Job], claimed_at: float) -> None:
        """Hold the jobs a claim returned and hand them to the executor, unless their lease may
        have run out meanwhile (a claim held up longer than the lease): then they go back."""
        in_flight = self._in_flight
        held_jobs = []
        for job in jobs:
            self._stats.claimed += 1
            self._metrics.job_claimed(job.job_type, job.queue, job.waited_seconds)
            held_jobs.append(in_flight.hold(job, claimed_at))
        if held_jobs and in_flight.lease_may_have_lapsed(claimed_at):
            self._executor.hand_back_lapsed(held_jobs)
            return
        for held in held_jobs:
            self._executor.start_or_wait(held)

    def _prefetch_depth(self, now: float) -> int:
        self._tell_prefetch_finished()
        return self.prefetch.depth(now)

    def _tell_prefetch_finished(self) -> None:
        """The prefetch sizing counts the handlers that ended since it was last told."""
        total = self._in_flight.finished_total
        if total > self._finished_seen:
            self.prefetch.finished(total - self._finished_seen)
            self._finished_seen = total

    async def _seconds_until_runnable(self) -> float | None:
        try:
            return await self._store.seconds_until_runnable(self.settings.queues)
        except TRANSIENT_ERRORS:
            return 0.0  # ask again after the next poll

    # -- the claim -----------------------------------------------------------------------------

    async def ensure_limit_state(self) -> None:
        """The limit-state rows of this daemon's limited types and queues, made before its
        first claim: a claim creates a missing one itself, but two replicas creating each
        other's rows in opposite orders at once could deadlock."""
        queue_limits = {queue: self.settings.queue_limits[queue] for queue in self._limited_queues}
        try:
            await self._store.ensure_limit_state(self._limits, queue_limits)
        except DATABASE_ERRORS as exc:
            # not fatal: the first claims create them
            self._log.warning("creating the limit-state rows failed", error=repr(exc))

    async def claim(self, limit: int) -> list[Job]:
        """One claim, one round trip: the queues and job types without limits, and each limited
        part (per limited type, per process or global; per limited queue). Which side goes
        first alternates, so neither can starve the other. Returned in the order to start them:
        limited jobs first, each side in claim order."""
        s, in_flight = self.settings, self._in_flight
        # the limited side goes first every other claim, and every claim while a limited job
        # waits for room
        self._limited_first = self._limited_waiting or not self._limited_first
        # limited parts take only slots free now: a job waiting in the prefetch would hold a
        # global slot (it is `running` in the database) and a spent token before it starts
        free_now = max(0, s.concurrency - in_flight.running - in_flight.waiting)
        local = self._executor.local_limits
        # a handler left behind holds its type's max_concurrency slot until it really ends: a
        # job claimed into that slot would wait for it, `running` and heartbeated, for good
        by_type = in_flight.by_type()
        plan = ClaimPlan(
            queues=self._free_queues,
            limit=limit,
            limited_limit=free_now,
            limited_first=self._limited_first,
            limited_types=[
                LimitedType(
                    job_type,
                    local[job_type] - by_type[job_type] if job_type in local else None,
                    self._limits.get(job_type),
                )
                for job_type in self._limited_types
            ],
            limited_queues={queue: s.queue_limits[queue] for queue in self._limited_queues},
        )
        claimed = await self._store.claim(self.worker_id, s.lease_seconds, plan)
        # a limited part that had no room says so; one that took every slot free now may have
        # left more behind it (the claim looks no further once the room is used up): either
        # way the next free slot is the limited side's
        self._limited_waiting = claimed.limited_waiting or 0 < min(limit, free_now) <= len(claimed.limited)
        return claimed.all


class PrefetchExpiry(PeriodicService):
    """Hands back jobs that waited prefetch_ttl for a slot (the slots are busy with longer jobs
    than the prefetch was sized for): any replica with a free slot may run them. Stopped when
    the daemon stops: the drain hands back what waits."""

    def __init__(
        self,
        in_flight: InFlight,
        completer: BatchCompleter,
        prefetch: PrefetchDepth,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        super().__init__("prefetch_expiry", prefetch.ttl / 2, log=log)
        self._in_flight = in_flight
        self._completer = completer
        self._prefetch = prefetch

    @property
    def enabled(self) -> bool:
        return self._prefetch.enabled

    async def run_once(self) -> None:
        ttl = self._prefetch.ttl
        expired = self._in_flight.take_waited_longer_than(ttl)
        if not expired:
            return
        for held in expired:
            self._completer.submit(Released.of(held.job))
        self._prefetch.handed_back(self.clock.time())
        self.log.info("handed back jobs that waited too long for a slot", jobs=len(expired), waited_seconds=ttl)
