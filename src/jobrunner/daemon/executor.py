"""The executor: runs held jobs, each in a task of its own, at most `concurrency` at once (the
slots), and hands each job's one outcome to the completer.

    fetcher ──start()──► a slot: the job's task ── attempt.py ──► outcome ──► completer
                              ▲
    waiting line ─────────────┘ the next one starts as soon as a slot frees

A job the daemon stops (a lost lease, a cancel request, the end of the shutdown grace, its
deadline) ends by the reason it was stopped for. A handler that does not stop within
cancel_grace of being cancelled is left behind: its job is settled without it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg
import structlog

from jobrunner.client import AsyncClient
from jobrunner.daemon.attempt import AttemptRunner
from jobrunner.daemon.blocking_pools import BlockingPools
from jobrunner.daemon.clock import sleep_unless
from jobrunner.daemon.completer import BatchCompleter
from jobrunner.daemon.in_flight import HeldJob, InFlight, StopReason
from jobrunner.outcomes import Cancelled, Outcome, Released
from jobrunner.registry import HandlerRegistry
from jobrunner.settings import Settings
from jobrunner.store import JobStore

if TYPE_CHECKING:
    from jobrunner.tracing import JobTracing

# a job's task is named after it (a deadline that passes finds the job by its task's name)
_TASK_PREFIX = "job-"


def _tracing(settings: Settings) -> JobTracing | None:
    """Spans per attempt when JOBRUNNER_TRACING is on; OpenTelemetry is imported only then."""
    if not settings.tracing:
        return None
    from jobrunner.tracing import JobTracing

    return JobTracing()


class Executor:
    def __init__(
        self,
        handlers: HandlerRegistry,
        handler_pool: asyncpg.Pool,
        client: AsyncClient,
        store: JobStore,
        settings: Settings,
        in_flight: InFlight,
        completer: BatchCompleter,
        log: structlog.typing.FilteringBoundLogger,
        *,
        stopping: asyncio.Event,
        usage_sink: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.blocking = BlockingPools(settings.blocking_threads, settings.blocking_processes, log)
        self.attempts = AttemptRunner(
            handlers,
            handler_pool,
            client,
            settings.default_timeout,
            log,
            usage_sink,
            store,
            settings,
            on_timeout=self._on_timeout,
            blocking=self.blocking,
            tracing=_tracing(settings),
        )
        self._in_flight = in_flight
        self._completer = completer
        self._log = log
        self._cancel_grace = settings.cancel_grace
        self._lease_seconds = settings.lease_seconds
        # set when the daemon stops: no new job starts, the drain hands the waiting ones back
        self._stopping = stopping
        # create_task() and get_running_loop() look the loop up on every call (a getpid() each)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def local_limits(self) -> dict[str, int]:
        """job_type -> its handler's max_concurrency in this process."""
        return self.attempts.local_limits

    # -- starting ------------------------------------------------------------------------------

    def start(self, held: HeldJob) -> None:
        """Run a held job now, in a slot of its own."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(held), name=f"{_TASK_PREFIX}{held.job.id}")
        self._in_flight.start(held, task)
        task.add_done_callback(functools.partial(self._task_done, held))

    def start_or_wait(self, held: HeldJob) -> None:
        """A job just claimed: run it if a slot is free, else it waits in line for one (and
        when stopping, for the drain to hand it back)."""
        if self._in_flight.has_free_slot and not self._stopping.is_set():
            self.start(held)
        else:
            self._in_flight.wait(held)

    def start_waiting(self) -> None:
        """Fill the free slots from the waiting line, in the claim's order (InFlight.next_waiting)."""
        in_flight = self._in_flight
        while in_flight.has_free_slot and not self._stopping.is_set():
            held = in_flight.next_waiting()
            if held is None:
                return
            if in_flight.lease_may_have_lapsed(held.claimed_at):
                self.hand_back_lapsed([held])
                continue
            self.start(held)

    def hand_back_lapsed(self, held_jobs: Sequence[HeldJob]) -> None:
        """Hand back jobs whose lease may have run out instead of running them: another replica
        may have rescued and started them. The write is fenced on the attempt, so it is
        discarded if the job was rescued meanwhile."""
        self._log.warning(
            "claimed jobs handed back unstarted: their lease may have run out before they could start",
            jobs=len(held_jobs),
            lease_seconds=self._lease_seconds,
        )
        for held in held_jobs:
            self._completer.submit(Released.of(held.job))

    # -- running ---------------------------------------------------------------------------------

    async def _run(self, held: HeldJob) -> None:
        job = held.job
        outcome: Outcome | None
        try:
            outcome = await self.attempts.run(job)
        except asyncio.CancelledError:
            outcome = None if held.left_behind else self._interrupted(held)
        except GeneratorExit:
            if held.left_behind:
                raise  # closed by the garbage collector: a task left behind when the loop closed
            self._log.exception("executor failed on a job", job_id=job.id, job_type=job.job_type)
            outcome = self.attempts.crashed(job, GeneratorExit())
        except BaseException as exc:  # whatever escapes the attempt (a payload model's SystemExit…)
            self._log.exception("executor failed on a job", job_id=job.id, job_type=job.job_type)
            outcome = self.attempts.crashed(job, exc)
        if held.left_behind:
            # its job was settled when it did not stop: how it ended at last changes nothing
            self._log.warning(
                "a handler jobrunner had stopped waiting for has ended",
                job_id=job.id,
                job_type=job.job_type,
                attempt=job.attempt,
            )
            return
        self._in_flight.finished(held)
        self._settle(held, outcome)

    def _task_done(self, held: HeldJob, task: asyncio.Task[None]) -> None:
        if held.grace_timer is not None:
            held.grace_timer.cancel()  # it stopped: nothing to wait for
            held.grace_timer = None
        if held.left_behind:
            # a handler left behind has ended at last: its type's slot is free, and claiming
            # resumes if the bound had stopped it
            self._in_flight.handler_ended(task)
            return
        # a task cancelled before its first step never ran `_run`, not even its `finally`:
        # settle its job here, or it would stay `running` under our heartbeat for good
        if self._in_flight.finished(held):
            self._settle(held, self._interrupted(held))

    def _settle(self, held: HeldJob, outcome: Outcome | None) -> None:
        """Its handler is done: its slot goes to the next job waiting, its outcome to the completer."""
        self.start_waiting()
        if outcome is None:
            self._in_flight.let_go(held.job.id, held.job.attempt)
        else:
            self._completer.submit(outcome)

    def _interrupted(self, held: HeldJob) -> Outcome | None:
        """The outcome of a job whose task was cancelled, by the reason the daemon cancelled it."""
        job = held.job
        match held.stop_reason:
            case StopReason.LEASE_LOST:
                return None  # the job is someone else's now: write nothing
            case StopReason.CANCEL_REQUESTED:
                return Cancelled.of(job)
            case StopReason.SHUTDOWN:
                return Released.of(job)
            case StopReason.TIMEOUT:
                # it ignored its deadline's cancel and stopped at a later one (a shutdown's): still
                # a timeout, or a handler that hangs during each rolling deploy would retry for ever
                return self.attempts.timed_out(job)
            case None:
                # not cancelled by the daemon (the handler cancelled its own task): a failed attempt
                return self.attempts.unrequested_cancel(job)

    # -- stopping --------------------------------------------------------------------------------

    def stop(self, held: HeldJob, reason: StopReason) -> bool:
        """Cancel a running job's handler for `reason`; it has cancel_grace to stop, else it is
        left behind. False when the job does not run here, or an earlier reason decides its
        outcome (a lost lease outranks any other, a cancel request a timeout)."""
        if held.task is None or not self._in_flight.is_running(held) or not reason.replaces(held.stop_reason):
            return False
        held.stop_reason = reason
        held.task.cancel()
        self._leave_behind_later(held)
        return True

    def hand_back_waiting(self) -> None:
        """The daemon stops: the jobs that never started go back at once, attempts not spent."""
        if waiting := self._in_flight.take_all_waiting():
            self._log.info("handing back jobs that had not started", jobs=len(waiting))
            for held in waiting:
                self._completer.submit(Released.of(held.job))

    async def drain(self, grace: float, stop_now: asyncio.Event) -> None:
        """The daemon stops: hand back the jobs that never started, give the running ones
        `grace` seconds to finish (cut short when `stop_now` is set: a second stop request), then
        stop the rest (stop_all)."""
        in_flight = self._in_flight
        self.hand_back_waiting()
        if in_flight.running and not stop_now.is_set():
            self._log.info("waiting for running jobs to finish", running=in_flight.running, grace_seconds=grace)
            loop = asyncio.get_running_loop()
            grace_ends = loop.time() + grace
            # every settled (or left behind) job and a second stop request set `freed`
            while in_flight.running and not stop_now.is_set() and (left := grace_ends - loop.time()) > 0:
                in_flight.freed.clear()
                await sleep_unless(in_flight.freed, left)
        await self.stop_all()

    async def stop_all(self) -> int:
        """The end of the shutdown grace: cancel every running handler (again, for one that
        swallowed an earlier cancel), give them cancel_grace to stop, then leave behind those
        that did not. A job stopped for no other reason is handed back. Returns how many."""
        leftover = list(self._in_flight.running_jobs())
        for held in leftover:
            if StopReason.SHUTDOWN.replaces(held.stop_reason):
                held.stop_reason = StopReason.SHUTDOWN
            assert held.task is not None
            held.task.cancel()
        if leftover:
            self._log.warning("handing back unfinished jobs", jobs=len(leftover))
            # a handler that ignores its cancellation gets cancel_grace, then is left behind
            await asyncio.wait([held.task for held in leftover if held.task is not None], timeout=self._cancel_grace)
            for held in leftover:
                self._leave_behind(held)
        # every job is settled or left behind: no call in the blocking pools is waited for now
        self.blocking.close()
        return len(leftover)

    def _on_timeout(self, task: asyncio.Task[object]) -> None:
        """A deadline cancelled this job's task: give the handler cancel_grace to stop."""
        job_id = task.get_name().removeprefix(_TASK_PREFIX)
        held = self._in_flight.get(int(job_id)) if job_id.isdigit() else None
        if held is not None and held.task is task:
            if StopReason.TIMEOUT.replaces(held.stop_reason):
                held.stop_reason = StopReason.TIMEOUT
            self._leave_behind_later(held)

    def _leave_behind_later(self, held: HeldJob) -> None:
        """Leave the handler behind unless it stops within cancel_grace of its first cancellation."""
        assert self._loop is not None
        if held.grace_timer is None:
            held.grace_timer = self._loop.call_later(self._cancel_grace, self._leave_behind, held)

    def _leave_behind(self, held: HeldJob) -> None:
        """The handler did not stop within cancel_grace of being cancelled (it swallows
        CancelledError, or its cleanup hangs): settle its job without it and free its slot. Its
        coroutine goes on in the background: asyncio cannot stop a coroutine that ignores
        cancellation. The job is no longer heartbeated once its outcome is written, and whatever
        the handler does later is never written (outcomes are fenced on id, attempt, running).
        The outcome follows the latest reason: a lease lost after a timeout writes nothing."""
        if held.grace_timer is not None:
            held.grace_timer.cancel()  # stop_all() got here first, or this is the timer itself
            held.grace_timer = None
        if held.task is None or held.task.done() or not self._in_flight.leave_behind(held):
            return
        job = held.job
        reason = held.stop_reason or StopReason.SHUTDOWN
        outcome: Outcome | None
        if reason is StopReason.TIMEOUT:
            outcome = self.attempts.timed_out_without_stopping(job, self._cancel_grace)
        else:
            outcome = self._interrupted(held)
        self._log.error(
            "handler did not stop after it was cancelled",
            job_id=job.id,
            job_type=job.job_type,
            attempt=job.attempt,
            reason=reason.value,
            waited_seconds=self._cancel_grace,
            outcome=outcome.name if outcome is not None else "dropped (lease lost)",
            still_running_in_background=self._in_flight.left_behind,
        )
        if self._in_flight.too_many_left_behind:
            self._log.error(
                "too many handlers left running in the background: claiming stopped, /healthz reports"
                " unhealthy so the process is restarted",
                abandoned=self._in_flight.left_behind,
                max_abandoned_handlers=self._in_flight.max_left_behind,
            )
        self._settle(held, outcome)
