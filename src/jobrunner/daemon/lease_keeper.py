"""The lease keeper: keeps the leases of the jobs this process holds, and stops the ones that
must stop.

- The heartbeat renews the lease of every held job (waiting, running or settling) every
  heartbeat_interval, at most a third of the lease, so one missed beat loses nothing. A job
  whose lease was lost anyway (this process stalled longer than the lease, and a rescuer took
  the job back) is someone else's now: dropped if it waits for a slot, its handler stopped if it
  runs, and nothing is written for it.
- Cancel requests (cancel_requests.py: a notification as a hint, a poll underneath, the table
  the judge) stop the job's handler, or take the job out of the waiting line; it ends cancelled.

The executor hands back, rather than starts, a job whose lease may have run out before it could
start (the rule: in_flight.py's lease_may_have_lapsed, fed by the heartbeat).
"""

from __future__ import annotations

import structlog

from jobrunner.daemon.cancel_requests import CancelRequests
from jobrunner.daemon.completer import BatchCompleter
from jobrunner.daemon.executor import Executor
from jobrunner.daemon.in_flight import InFlight, StopReason
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.daemon.stats import DaemonStats
from jobrunner.metrics import DaemonMetrics
from jobrunner.outcomes import Cancelled
from jobrunner.settings import Settings
from jobrunner.store import JobStore


class LeaseKeeper:
    def __init__(
        self,
        store: JobStore,
        in_flight: InFlight,
        executor: Executor,
        completer: BatchCompleter,
        stats: DaemonStats,
        metrics: DaemonMetrics,
        settings: Settings,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._in_flight = in_flight
        self._executor = executor
        self._completer = completer
        self._stats = stats
        self._metrics = metrics
        self._log = log
        self.heartbeat = Heartbeat(self, store, in_flight, settings, log, metrics)
        self.cancel_requests = CancelRequests(
            store,
            in_flight.cancellable,
            in_flight.is_cancellable,
            self.cancel,
            poll_interval=settings.cancel_poll_interval,
            min_interval=settings.notify_min_interval,
            log=log,
            errors=metrics.database_errors,
        )

    @property
    def services(self) -> list[PeriodicService]:
        return [self.heartbeat, self.cancel_requests]

    def lease_lost(self, job_id: int, attempt: int) -> None:
        """The heartbeat found this attempt's lease gone."""
        held = self._in_flight.get(job_id)
        if held is None or held.job.attempt != attempt:
            return  # settled while the heartbeat was under way
        if self._in_flight.take_waiting(job_id) is not None:
            # never started: forget it, its next holder runs it
            self._in_flight.let_go(job_id, attempt)
            self._log.warning("lease lost: job was taken back before it started", job_id=job_id)
            self._count_lost()
            return
        if not self._in_flight.is_running(held) or held.stop_reason is StopReason.LEASE_LOST:
            return  # settling (its write will be refused), or seen at an earlier beat
        self._log.warning(
            "lease lost: job was taken back, cancelling its handler",
            job_id=job_id,
            job_type=held.job.job_type,
            attempt=attempt,
        )
        self._count_lost()
        self._executor.stop(held, StopReason.LEASE_LOST)

    def _count_lost(self) -> None:
        self._stats.lost_leases += 1
        self._metrics.lost_leases.inc()

    def cancel(self, job_id: int) -> bool:
        """Stop the handler of job_id if it runs here (or drop it if it waits for a slot here);
        the job then ends `cancelled`. Only for a request the table confirmed (CancelRequests)."""
        waiting = self._in_flight.take_waiting(job_id)
        if waiting is not None:
            self._log.info("cancelling waiting job on request", job_id=job_id, job_type=waiting.job.job_type)
            self._completer.submit(Cancelled.of(waiting.job))
            return True
        held = self._in_flight.get(job_id)
        # a request outranks a timeout: the job was asked to end, so it ends cancelled
        if held is None or not self._executor.stop(held, StopReason.CANCEL_REQUESTED):
            return False
        self._log.info("cancelling running job on request", job_id=job_id, job_type=held.job.job_type)
        return True


class Heartbeat(PeriodicService):
    """Renews every held job's lease; tells the keeper of each lease found lost."""

    def __init__(
        self,
        keeper: LeaseKeeper,
        store: JobStore,
        in_flight: InFlight,
        settings: Settings,
        log: structlog.typing.FilteringBoundLogger,
        metrics: DaemonMetrics,
    ) -> None:
        super().__init__("heartbeat", settings.effective_heartbeat_interval, log=log, errors=metrics.database_errors)
        self._keeper = keeper
        self._store = store
        self._in_flight = in_flight
        self._lease_seconds = settings.lease_seconds

    async def run_once(self) -> None:
        held = self._in_flight.attempts()
        if not held:
            return
        sent = self.clock.time()
        still_ours = await self._store.extend_leases(held, self._lease_seconds)
        self._in_flight.leases_renewed(sent)
        for job_id in held.keys() - still_ours:
            self._keeper.lease_lost(job_id, held[job_id])
