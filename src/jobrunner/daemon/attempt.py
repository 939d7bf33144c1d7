"""One attempt of one job: decode its payload, call its handler under its deadline and its
type's max_concurrency, and say how it ended as one outcome (outcomes.py).

How a handler ends decides the outcome: it returns (completed), raises PermanentError or gets a
payload its model refuses (failed), raises RetryLater or UpstreamRateLimited (retried after their
delay), raises anything else or passes its timeout (retried per its RetryPolicy, dead on the last
attempt). A cancellation the daemon asked for is not decided here: the executor knows why it
stopped the handler (executor.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from pydantic import ValidationError

from jobrunner.client import AsyncClient
from jobrunner.context import BlockingRunner, JobContext
from jobrunner.daemon.deadlines import Deadlines
from jobrunner.error_reporting import report_job_error
from jobrunner.errors import PermanentError, RetryLater, Snooze, UpstreamRateLimited
from jobrunner.handler import Handler
from jobrunner.job import Job
from jobrunner.outcomes import Completed, Dead, Failed, Outcome, RetryAfter, Snoozed
from jobrunner.redaction import redact_text
from jobrunner.registry import HandlerRegistry
from jobrunner.settings import Settings
from jobrunner.store import JobStore
from jobrunner.trace_context import without_trace

if TYPE_CHECKING:
    from jobrunner.tracing import JobTracing

_MAX_ERROR_CHARS = 10_000
_MAX_TRACEBACK_CHARS = 50_000

# max_snoozes without settings (an AttemptRunner outside a daemon): the settings' default
DEFAULT_MAX_SNOOZES = 100

UNREQUESTED_CANCEL = (
    "handler raised CancelledError that jobrunner did not request"
    " (an inner task or future it awaited was cancelled, or it cancelled its own task)"
)


def storable_text(text: str) -> str:
    """Text PostgreSQL can store: no NUL, no lone surrogates (both make the write fail)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def storable_json(value: Any) -> str:
    """JSON that jsonb accepts: it refuses \\u0000 and unpaired surrogate escapes."""
    text = json.dumps(value, default=str, allow_nan=False, ensure_ascii=False)
    if "\\u0000" in text:
        text = text.replace("\\u0000", "\ufffd")
    return storable_text(text)


def _clip(text: str, limit: int) -> str:
    text = storable_text(redact_text(text))
    return text if len(text) <= limit else text[: limit - 20] + "… [truncated]"


def _closed_from_outside(exc: BaseException) -> bool:
    """GeneratorExit thrown in by coroutine.close() with no loop running: the handler was left
    behind (it ignored cancellation) and is being collected, not ending on its own."""
    if not isinstance(exc, GeneratorExit):
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def describe_validation_error(job_type: str, exc: ValidationError) -> str:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(payload)'}: {err['msg']}" for err in exc.errors())
    return f"invalid payload for {job_type}: {problems}"


class AttemptRunner:
    def __init__(
        self,
        registry: HandlerRegistry,
        pool: asyncpg.Pool,
        client: AsyncClient,
        default_timeout: float | None,
        log: structlog.typing.FilteringBoundLogger,
        usage_sink: Callable[[str, str, float], None] | None = None,
        store: JobStore | None = None,
        settings: Settings | None = None,
        on_timeout: Callable[[asyncio.Task[Any]], object] | None = None,
        blocking: BlockingRunner | None = None,
        tracing: JobTracing | None = None,
    ) -> None:
        self._settings = settings
        # spans per attempt (jobrunner.tracing); None: tracing is off and OpenTelemetry not loaded
        self._tracing = tracing
        self._blocking = blocking
        self._store = store
        self._usage_sink = usage_sink
        self._registry = registry
        self._pool = pool
        self._client = client
        self._default_timeout = default_timeout
        self._log = log
        # job_type -> its handler's max_concurrency in this process (read on every claim)
        self.local_limits: dict[str, int] = {
            job_type: h.max_concurrency
            for job_type in registry.job_types()
            if (h := registry.get(job_type)) and h.max_concurrency
        }
        self._type_limits = {job_type: asyncio.Semaphore(n) for job_type, n in self.local_limits.items()}
        # on_timeout: told the task whose deadline passed, once it has been cancelled
        self._deadlines = Deadlines(on_timeout)

    async def run(self, job: Job) -> Outcome:
        if self._tracing is not None:
            outcome: Outcome = await self._tracing.run(job, self._run)
            return outcome
        return await self._run(job)

    async def _run(self, job: Job) -> Outcome:
        handler = self._registry.get(job.job_type)
        if handler is None:
            known = ", ".join(self._registry.job_types()) or "none"
            return self._failed(
                job,
                f"unknown job_type {job.job_type!r}: no handler is registered for it (known: {known})",
                self._job_log(job),
            )
        try:
            payload = self._payload_for(handler, job)
        except PermanentError as exc:
            return self._failed(job, str(exc), self._job_log(job))
        context: JobContext[Any] = JobContext(
            job,
            payload,
            self._log,
            self._pool,
            self._client,
            self._usage_sink,
            self._store,
            self._settings,
            self._blocking,
        )
        limit = self._type_limits.get(job.job_type)
        if limit is None:
            return await self._timed(handler, job, context)
        async with limit:
            return await self._timed(handler, job, context)

    def _job_log(self, job: Job) -> structlog.typing.FilteringBoundLogger:
        return self._log.bind(job_id=job.id, job_type=job.job_type, attempt=job.attempt)

    def _payload_for(self, handler: Handler, job: Job) -> Any:
        try:
            decoded = json.loads(job.payload_json)
        except RecursionError as exc:
            raise PermanentError("payload is nested too deeply to decode") from exc
        except ValueError as exc:  # the column is jsonb, so only a corrupted row gets here
            raise PermanentError(f"payload is not valid JSON: {exc}") from exc
        decoded = without_trace(decoded)  # the trace context stored with the job is not the handler's
        if handler.payload_model is None:
            return decoded
        try:
            return handler.payload_model.model_validate(decoded)
        except ValidationError as exc:
            raise PermanentError(describe_validation_error(job.job_type, exc)) from exc

    async def _timed(self, handler: Handler, job: Job, context: JobContext[Any]) -> Outcome:
        started = time.perf_counter()
        outcome = await self._attempt(handler, job, context)
        outcome.duration = time.perf_counter() - started
        return outcome

    async def _attempt(self, handler: Handler, job: Job, context: JobContext[Any]) -> Outcome:
        timeout = handler.timeout if handler.timeout is not None else self._default_timeout
        # an infinite timeout (a handler opting out of default_timeout) means no deadline
        deadline = self._deadlines.arm(timeout) if timeout is not None and math.isfinite(timeout) else None
        try:
            try:
                result = await handler.func(context)
            finally:
                if deadline is not None:
                    self._deadlines.disarm(deadline)
                    # like asyncio.timeout: our own cancel is taken back, anyone else's stays
                    if deadline.expired and deadline.task.uncancel() > deadline.base_cancelling:
                        deadline = None
        except asyncio.CancelledError:
            if deadline is not None and deadline.expired:
                message = f"timed out after {timeout:g}s (handler timeout) and was cancelled"
                return self._retry_or_dead(
                    job, handler.retry.delay_for(job.attempt), message, traceback.format_exc(), context.log
                )
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # shutdown, a lost lease, a cancel request: the daemon decides
            # nobody cancelled this task: the handler's own code raised it (an inner task or
            # future it awaited was cancelled). Taken for a hand-back it would run again at
            # once, attempt not counted, for ever.
            return self._retry_or_dead(
                job, handler.retry.delay_for(job.attempt), UNREQUESTED_CANCEL, traceback.format_exc(), context.log
            )
        except PermanentError as exc:
            return self._failed(job, f"{type(exc).__name__}: {exc}", context.log, with_traceback=True)
        except UpstreamRateLimited as exc:
            if self._store is not None:
                try:
                    await self._store.pause_job_type(job.job_type, exc.seconds, redact_text(str(exc)))
                    context.log.warning(
                        "upstream rate limit: job type paused on every replica", pause_seconds=exc.seconds
                    )
                except Exception as pause_error:  # the retry below still happens
                    context.log.warning("could not pause the job type", error=repr(pause_error))
            return self._retry_or_dead(
                job, exc.seconds, f"UpstreamRateLimited: {exc}", traceback.format_exc(), context.log
            )
        except RetryLater as exc:
            return self._retry_or_dead(job, exc.seconds, f"RetryLater: {exc}", traceback.format_exc(), context.log)
        except Snooze as exc:
            return await self._snoozed(handler, job, exc, context.log)
        except TimeoutError:
            return self._retry_or_dead(
                job,
                handler.retry.delay_for(job.attempt),
                "TimeoutError raised by the handler",
                traceback.format_exc(),
                context.log,
            )
        except Exception as exc:
            if not job.is_last_attempt:  # the dead path below reports the last one
                report_job_error(job, exc, dead=False)
            message = f"{type(exc).__name__}: {exc}"
            return self._retry_or_dead(
                job, handler.retry.delay_for(job.attempt), message, traceback.format_exc(), context.log
            )
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, GeneratorExit, a library's own BaseException: they
            # would stop the event loop (or leave the job running under our heartbeat); here
            # they end this attempt like any other error
            if _closed_from_outside(exc):
                raise
            if not job.is_last_attempt:
                report_job_error(job, exc, dead=False)
            message = f"{type(exc).__name__} raised by the handler (a BaseException, not an Exception): {exc}"
            return self._retry_or_dead(
                job, handler.retry.delay_for(job.attempt), message, traceback.format_exc(), context.log
            )
        try:
            result_json = None if result is None else storable_json(result)
        except (ValueError, RecursionError) as exc:
            context.log.warning("job result not stored: not valid JSON", error=str(exc))
            result_json = None
        return Completed(job.id, job.attempt, job.job_type, job.queue, result_json)

    async def _snoozed(
        self, handler: Handler, job: Job, snooze: Snooze, log: structlog.typing.FilteringBoundLogger
    ) -> Outcome:
        """Snoozed, its attempt given back; past its max_snoozes, a failed attempt instead."""
        limit = handler.max_snoozes
        if limit is None:
            limit = self._settings.max_snoozes if self._settings is not None else DEFAULT_MAX_SNOOZES
        snoozes = await self._store.snoozes(job.id, job.attempt) if self._store is not None else 0
        if snoozes is not None and snoozes >= limit:
            message = (
                f"snoozed {snoozes} times, the most a job of {job.job_type} may (max_snoozes={limit}):"
                f" this snooze counts as a failed attempt (it asked: {snooze})"
            )
            return self._retry_or_dead(job, handler.retry.delay_for(job.attempt), message, None, log)
        log.info("job snoozed", snooze_seconds=round(snooze.seconds, 3), reason=snooze.reason or None)
        # snoozes None: the attempt is no longer ours; the write is fenced and will say so
        return Snoozed(job.id, job.attempt, job.job_type, job.queue, snooze.seconds, snooze.reason)

    def _failed(
        self,
        job: Job,
        message: str,
        log: structlog.typing.FilteringBoundLogger,
        *,
        with_traceback: bool = False,
    ) -> Outcome:
        log.warning("job failed permanently", error=message)
        return Failed(
            job.id,
            job.attempt,
            job.job_type,
            job.queue,
            _clip(message, _MAX_ERROR_CHARS),
            _clip(traceback.format_exc(), _MAX_TRACEBACK_CHARS) if with_traceback else None,
        )

    def _retry_or_dead(
        self,
        job: Job,
        delay: float,
        message: str,
        trace: str | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        """`trace` None: there is no traceback to store (the handler never raised one)."""
        error = _clip(message, _MAX_ERROR_CHARS)
        trace = None if trace is None else _clip(trace, _MAX_TRACEBACK_CHARS)
        if job.is_last_attempt:
            log.error("job dead: no attempts left", error=error, max_attempts=job.max_attempts)
            report_job_error(job, sys.exception(), dead=True)  # called inside the handler's `except`
            return Dead(job.id, job.attempt, job.job_type, job.queue, error, trace)
        log.warning("job failed, will retry", error=error, retry_in=round(delay, 3))
        return RetryAfter(job.id, job.attempt, job.job_type, job.queue, delay, error, trace)

    def crashed(self, job: Job, exc: BaseException) -> Outcome:
        """The executor itself failed on this job (a bug, or input nothing else caught): fail that job
        alone rather than leave it running under a heartbeat forever."""
        return self._failed(job, f"jobrunner could not run this job: {type(exc).__name__}: {exc}", self._job_log(job))

    def unrequested_cancel(self, job: Job) -> Outcome:
        """The job's task was cancelled by someone other than jobrunner (e.g. the handler cancelled
        its own task) before it ran: a failed attempt, retried per the handler's policy. No
        traceback: the task never ran a line, so there is none to store."""
        return self._retry_or_dead(job, self._retry_delay(job), UNREQUESTED_CANCEL, None, self._job_log(job))

    def timed_out(self, job: Job) -> Outcome:
        """The handler passed its timeout, ignored that cancellation and stopped at a later one
        (a shutdown's): the attempt ends as a timeout."""
        message = f"timed out after {self._timeout_of(job):g}s (handler timeout) and was cancelled"
        return self._retry_or_dead(job, self._retry_delay(job), message, None, self._job_log(job))

    def timed_out_without_stopping(self, job: Job, waited: float) -> Outcome:
        """The handler passed its timeout and did not stop within `waited` seconds of being cancelled:
        the attempt ends as a timeout while the handler's coroutine may still run."""
        message = (
            f"timed out after {self._timeout_of(job):g}s (handler timeout) and did not stop within {waited:g}s"
            " of being cancelled: jobrunner stopped waiting for it (it may still be running in the background)"
        )
        return self._retry_or_dead(job, self._retry_delay(job), message, None, self._job_log(job))

    def _timeout_of(self, job: Job) -> float:
        handler = self._registry.get(job.job_type)
        timeout = handler.timeout if handler is not None and handler.timeout is not None else self._default_timeout
        return timeout or 0.0

    def _retry_delay(self, job: Job) -> float:
        handler = self._registry.get(job.job_type)
        return handler.retry.delay_for(job.attempt) if handler is not None else 0.0
