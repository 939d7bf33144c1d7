"""A handler: an async function registered under a job type, with its options."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from pydantic import BaseModel

from jobrunner.blocking import BlockingContext, RunsIn, call_by_reference
from jobrunner.enqueue import checked_payload
from jobrunner.limits import GlobalLimits
from jobrunner.retry import DEFAULT_RETRY_POLICY, RetryPolicy

if TYPE_CHECKING:
    import psycopg

    from jobrunner.client import Client
    from jobrunner.context import JobContext
    from jobrunner.enqueue import AsyncEnqueuer, EnqueueOptions
    from jobrunner.statements import AsyncConnection

HandlerFunc = Callable[["JobContext[Any]"], Awaitable[Any]]
# a @blocking_handler's own function: synchronous, run in a pool thread or process
BlockingFunc = Callable[[BlockingContext[Any]], Any]


@dataclass(frozen=True)
class Handler:
    job_type: str
    func: HandlerFunc
    payload_model: type[BaseModel] | None = None
    retry: RetryPolicy = DEFAULT_RETRY_POLICY
    # seconds; None: the daemon's default_timeout
    timeout: float | None = None
    # most jobs of this type running at once in one daemon; None: no limit but concurrency
    max_concurrency: int | None = None
    # called once at daemon start: returns what is missing (e.g. "OPENAI_API_KEY is not set")
    # or None; the daemon starts anyway and logs it once
    startup_check: Callable[[], str | None] | None = None
    # limits across all replicas, enforced by the database when claiming
    limits: GlobalLimits | None = None
    # most times one job of this type may snooze (raise Snooze); None: the daemon's max_snoozes
    max_snoozes: int | None = None
    # where its code runs: "event_loop" for an async handler; a @blocking_handler's pool
    runs_in: RunsIn = "event_loop"
    # a @blocking_handler's synchronous function (func calls it in the pool)
    blocking_func: BlockingFunc | None = None

    def __post_init__(self) -> None:
        if not self.job_type or len(self.job_type) > 200:
            raise ValueError("a handler's job_type must be 1 to 200 characters")
        if self.job_type == "__unknown__":
            # the metrics' label for job types without a handler (jobrunner.metrics)
            raise ValueError("__unknown__ is reserved: the metrics' label for jobs of unregistered types")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"handler {self.job_type}: timeout must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"handler {self.job_type}: max_concurrency must be at least 1")
        if self.max_snoozes is not None and self.max_snoozes < 0:
            raise ValueError(f"handler {self.job_type}: max_snoozes must be 0 or more")

    # -- typed enqueue: this handler's job type, its payload checked by its model before it
    # is sent (jobrunner.enqueue)

    async def enqueue(
        self,
        jobs: AsyncEnqueuer,
        payload: BaseModel | Mapping[str, Any] | None = None,
        *,
        connection: AsyncConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> int:
        """Enqueue a job of this handler's type through `jobs` (an AsyncClient, or a handler's
        JobContext), inside `connection`'s transaction when given; returns its id. `payload` is
        an instance of the payload model or a mapping it accepts: one it refuses raises
        InvalidJob here, and nothing is sent."""
        checked = checked_payload(self.job_type, self.payload_model, payload)
        return await jobs.enqueue(self.job_type, checked, connection=connection, **options)

    def enqueue_sync(
        self,
        client: Client,
        payload: BaseModel | Mapping[str, Any] | None = None,
        *,
        connection: psycopg.Connection[Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> int:
        """`enqueue` for synchronous code, through a psycopg `Client`."""
        checked = checked_payload(self.job_type, self.payload_model, payload)
        return client.enqueue(self.job_type, checked, connection=connection, **options)


class HandlerOptions(TypedDict, total=False):
    """How a handler's jobs run, besides its job type and function: the keywords `handler` and
    `blocking_handler` both take, each with the default of `Handler`'s field of that name."""

    payload_model: type[BaseModel] | None
    """The pydantic model the payload is validated into (None: the decoded JSON object)."""
    retry: RetryPolicy
    """Backoff and jitter between failed attempts."""
    timeout: float | None
    """Seconds an attempt may run (None: the daemon's default_timeout)."""
    max_concurrency: int | None
    """Most jobs of this type running at once in one daemon (None: only concurrency)."""
    startup_check: Callable[[], str | None] | None
    """Called once at daemon start: what is missing (e.g. "OPENAI_API_KEY is not set"), or None."""
    limits: GlobalLimits | None
    """Limits across all replicas, enforced by the database when claiming."""
    max_snoozes: int | None
    """Most times one job may snooze (None: the daemon's max_snoozes)."""


def handler(job_type: str, **options: Unpack[HandlerOptions]) -> Callable[[HandlerFunc], Handler]:
    """Declare a handler (the options are `HandlerOptions`):

    @handler("send_email", payload_model=Email, timeout=30)
    async def send_email(ctx: JobContext[Email]) -> None: ...
    """

    def wrap(func: HandlerFunc) -> Handler:
        return Handler(job_type, func, **options)

    return wrap


def blocking_handler(
    job_type: str, *, runs_in: Literal["thread", "process"] = "thread", **options: Unpack[HandlerOptions]
) -> Callable[[BlockingFunc], Handler]:
    """Declare a synchronous handler run off the event loop, in the daemon's bounded thread pool
    (`runs_in="thread"`: blocking I/O, C code that releases the GIL) or process pool
    (`runs_in="process"`: pure-Python CPU work; the function must be defined at module level)::

    @blocking_handler("resize", runs_in="thread", payload_model=Resize, timeout=60)
    def resize(ctx: BlockingContext[Resize]) -> dict[str, int]: ...

    Its timeout, cancel requests and shutdown settle the job as for any handler; the call itself
    cannot be interrupted and runs on, its result discarded (jobrunner.blocking says how to stop early).
    """
    if runs_in not in ("thread", "process"):
        raise ValueError(f"handler {job_type}: runs_in must be 'thread' or 'process', not {runs_in!r}")

    def wrap(func: BlockingFunc) -> Handler:
        if inspect.iscoroutinefunction(func):
            raise ValueError(f"handler {job_type}: a blocking handler is a plain function, not `async def`")
        if runs_in == "process" and "<locals>" in func.__qualname__:
            raise ValueError(
                f"handler {job_type}: a process handler must be a module-level function (it is found by name"
                " in the worker process)"
            )
        module, qualname = func.__module__, func.__qualname__

        async def run(ctx: JobContext[Any]) -> Any:
            call_context: BlockingContext[Any] = BlockingContext(ctx.job, ctx.payload)
            if runs_in == "thread":
                return await ctx.run_in_thread(func, call_context)
            return await ctx.run_in_process(call_by_reference, module, qualname, call_context)

        functools.update_wrapper(run, func)
        return Handler(job_type, run, runs_in=runs_in, blocking_func=func, **options)

    return wrap
