"""The in-flight registry: every job this process holds, from its claim until its outcome is
committed, and the handlers it stopped waiting for.

A held job is in one of three places, and moves forward only:

    waiting   claimed ahead of a free slot (JOBRUNNER_PREFETCH), in claim order
    running   its handler runs in one of the `concurrency` slots
    settling  its outcome is with the completer, not yet committed

Every held job is heartbeated, whatever its place: its row says `running` until the outcome is
written. The fetcher puts jobs in, the executor moves them from waiting to running to settling,
the completer lets them go once their outcome committed, the lease keeper drops them when their
lease is lost. `freed` is set whenever room frees up (a slot, a place in the prefetch, a held
job let go): the fetcher waits on it when it has no room to claim.

A handler that did not stop within cancel_grace of being cancelled is left behind: its job is
settled without it, but it is counted here until it really ends, since it may still hold its
type's max_concurrency slot.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from jobrunner.daemon.clock import Clock
from jobrunner.job import Job


class StopReason(enum.Enum):
    """Why the daemon cancelled a job's handler; its outcome follows from it (executor.py)."""

    SHUTDOWN = "shutdown"  # the drain's grace ran out: handed back, its attempt not spent
    LEASE_LOST = "lease lost"  # the job is someone else's now: nothing is written
    CANCEL_REQUESTED = "cancel requested"  # someone asked (cancel_job): it ends cancelled
    TIMEOUT = "timeout"  # its deadline passed: the attempt is spent

    def replaces(self, current: StopReason | None) -> bool:
        """Whether this reason, coming after `current`, decides the outcome instead: a lost
        lease outranks any other (the job is no longer ours to write), a cancel request outranks
        a timeout (the job was asked to end, so it ends cancelled); otherwise the first stands."""
        if current is None:
            return True
        if self is StopReason.LEASE_LOST:
            return current is not StopReason.LEASE_LOST
        return self is StopReason.CANCEL_REQUESTED and current is StopReason.TIMEOUT


# weakref_slot: tests check that nothing keeps a settled job's record alive
@dataclass(eq=False, slots=True, weakref_slot=True)
class HeldJob:
    job: Job
    # clock time the claim that took it was sent: its lease started no earlier
    claimed_at: float
    task: asyncio.Task[None] | None = None
    # why the daemon cancelled its handler, when it did (the latest reason that counts)
    stop_reason: StopReason | None = None
    # it did not stop within cancel_grace of its cancellation: its job was settled without it
    left_behind: bool = False
    # the cancel_grace timer armed at its first cancellation, cancelled when the task ends
    grace_timer: asyncio.TimerHandle | None = None


class InFlight:
    def __init__(
        self, concurrency: int, lease_seconds: float, *, max_left_behind: int, clock: Clock | None = None
    ) -> None:
        self.concurrency = concurrency
        # past this many handlers left behind, the daemon claims nothing more and is unhealthy
        self.max_left_behind = max_left_behind
        self._lease_seconds = lease_seconds
        self._clock = clock or Clock()
        self._held: dict[int, HeldJob] = {}
        self._waiting: dict[int, HeldJob] = {}  # in claim order (the prefetch TTL's order)
        # the waiting line's start order, the claim's own: priority, then scheduled_at. A job
        # claimed later can start first: a rescued job keeps its original scheduled_at, so it
        # does not queue locally behind younger jobs claimed ahead. Entries of jobs taken out
        # of the line some other way stay here until popped (lazy deletion).
        self._start_order: list[tuple[int, datetime, int, int, HeldJob]] = []
        self._waited = 0  # tie-breaker: one job waiting twice (a new attempt) is two entries
        self._running: dict[int, HeldJob] = {}
        self._left_behind: dict[asyncio.Task[None], str] = {}  # task -> its job's type
        self.freed = asyncio.Event()
        # handlers that ended (or were left behind) so far: the prefetch sizing reads the rate
        self.finished_total = 0
        # clock time the last heartbeat that went through was sent: every lease it renewed
        # runs at least until then + lease_seconds
        self._renewed_at = -float("inf")

    # -- counts ------------------------------------------------------------------------------

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def left_behind(self) -> int:
        """Handlers still running after their jobs were settled without them."""
        return len(self._left_behind)

    @property
    def too_many_left_behind(self) -> bool:
        return len(self._left_behind) >= self.max_left_behind

    @property
    def has_free_slot(self) -> bool:
        return len(self._running) < self.concurrency

    # -- moving forward ----------------------------------------------------------------------

    def hold(self, job: Job, claimed_at: float) -> HeldJob:
        """A job just claimed: held (and heartbeated) until let go."""
        held = self._held[job.id] = HeldJob(job, claimed_at)
        return held

    def wait(self, held: HeldJob) -> None:
        """Into the waiting line, in the claim's order: behind waiting jobs of a higher
        priority or scheduled earlier."""
        job = held.job
        self._waiting[job.id] = held
        self._waited += 1
        heapq.heappush(self._start_order, (-job.priority, job.scheduled_at, job.id, self._waited, held))

    def next_waiting(self) -> HeldJob | None:
        """The first job of the waiting line (highest priority, then earliest scheduled_at),
        taken out of it."""
        waiting, start_order = self._waiting, self._start_order
        if not waiting:
            start_order.clear()  # only entries of jobs taken out some other way were left
            return None
        while start_order:
            held = heapq.heappop(start_order)[-1]
            if waiting.get(held.job.id) is held:
                del waiting[held.job.id]
                return held
        return None

    def start(self, held: HeldJob, task: asyncio.Task[None]) -> None:
        held.task = task
        self._running[held.job.id] = held

    def finished(self, held: HeldJob) -> bool:
        """Its handler ended: out of its slot, settling. False if it was not running (left
        behind, or settled already)."""
        if self._running.get(held.job.id) is not held:
            return False
        del self._running[held.job.id]
        self.finished_total += 1
        self.freed.set()
        return True

    def leave_behind(self, held: HeldJob) -> bool:
        """Its handler ignored its cancellation: out of its slot, its job settled without it,
        the handler counted apart until it ends. False if it was not running."""
        if held.task is None or self._running.get(held.job.id) is not held:
            return False
        del self._running[held.job.id]
        held.left_behind = True
        self._left_behind[held.task] = held.job.job_type
        self.finished_total += 1
        self.freed.set()
        return True

    def handler_ended(self, task: asyncio.Task[None]) -> None:
        """A handler left behind ended at last: its type's slot is free again."""
        if self._left_behind.pop(task, None) is not None:
            self.freed.set()

    def let_go(self, job_id: int, attempt: int) -> None:
        """Its outcome committed (or there is none to write): no longer ours. Only the attempt
        held: a job rescued and claimed here again is a new hold."""
        held = self._held.get(job_id)
        if held is not None and held.job.attempt == attempt:
            del self._held[job_id]
            self._waiting.pop(job_id, None)
            self.freed.set()

    def take_waiting(self, job_id: int) -> HeldJob | None:
        """Out of the waiting line (cancelled, or its lease lost before it started)."""
        held = self._waiting.pop(job_id, None)
        if held is not None:
            self.freed.set()
        return held

    def take_all_waiting(self) -> list[HeldJob]:
        """Empty the waiting line (the drain hands them back), in claim order."""
        waiting = list(self._waiting.values())
        self._waiting.clear()
        self._start_order.clear()
        return waiting

    def take_waited_longer_than(self, seconds: float) -> list[HeldJob]:
        """Out of the waiting line: those that have waited `seconds` since their claim."""
        now = self._clock.time()
        expired: list[HeldJob] = []
        # claim order is waiting order: the expired ones are at the front
        for held in self._waiting.values():
            if now - held.claimed_at < seconds:
                break
            expired.append(held)
        for held in expired:
            del self._waiting[held.job.id]
        if expired:
            self.freed.set()
        return expired

    # -- looking up ----------------------------------------------------------------------------

    def get(self, job_id: int) -> HeldJob | None:
        """The job held under this id (in whatever place), or None."""
        return self._held.get(job_id)

    def is_waiting(self, held: HeldJob) -> bool:
        return self._waiting.get(held.job.id) is held

    def is_running(self, held: HeldJob) -> bool:
        return self._running.get(held.job.id) is held

    def running_jobs(self) -> Iterator[HeldJob]:
        return iter(list(self._running.values()))

    def waiting_jobs(self) -> list[Job]:
        return [held.job for held in self._waiting.values()]

    def attempts(self) -> dict[int, int]:
        """Every held job's id and attempt: what the heartbeat renews."""
        return {job_id: held.job.attempt for job_id, held in self._held.items()}

    def cancellable(self) -> list[int]:
        """The jobs a cancel request can reach here: running, or waiting for a slot."""
        return [*self._running, *self._waiting]

    def is_cancellable(self, job_id: int) -> bool:
        return job_id in self._running or job_id in self._waiting

    def by_type(self) -> Counter[str]:
        """Held jobs and handlers left behind, by job type: what max_concurrency counts."""
        counts = Counter(held.job.job_type for held in self._held.values())
        counts.update(self._left_behind.values())
        return counts

    # -- leases ----------------------------------------------------------------------------------

    def leases_renewed(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` went through."""
        self._renewed_at = sent_at

    def lease_may_have_lapsed(self, claimed_at: float) -> bool:
        """Whether a lease that started no earlier than `claimed_at` (and was last renewed by the
        heartbeat that went through last) may have run out: a claim or the process held up for
        longer than the lease. Another replica may have rescued and started the job."""
        started = max(claimed_at, self._renewed_at)
        return self._clock.time() - started >= self._lease_seconds
