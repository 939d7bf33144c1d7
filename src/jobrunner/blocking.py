"""Blocking work off the event loop: what a handler sees of the daemon's thread and process pools.

A blocking call (CPU-bound code, a synchronous library) run on the event loop freezes the whole
daemon: heartbeats, outcome writes and /healthz wait for it. Run it in the daemon's bounded pools
instead, in one of two ways:

- `await ctx.run_in_thread(fn, *args)` / `await ctx.run_in_process(fn, *args)` from an async
  handler, for the blocking part only (an upload handler downloads, decodes, uploads: only the
  decode is blocking);
- `@blocking_handler("type", runs_in="thread" | "process")` on a plain function: the whole
  handler runs there and gets a `BlockingContext`.

A thread cannot be killed. When the job's task stops waiting (its timeout, a cancel request, a
lost lease, the end of the shutdown grace), the job's outcome is settled then and there, like any
other handler's, and whatever the thread returns later is discarded. The thread runs on, holding
its place in the bounded pool, until it returns: code that loops can ask `cancelled()` (or call
`raise_if_cancelled()`) to end early. A process-pool call is not interrupted either; the daemon
terminates its worker processes when it exits.
"""

from __future__ import annotations

import contextvars
import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from jobrunner.job import Job

if TYPE_CHECKING:
    import structlog

PayloadT = TypeVar("PayloadT")

# where a handler's code runs: the event loop (an async handler), or one of the daemon's pools
RunsIn = Literal["event_loop", "thread", "process"]

# set in the context a pool thread runs a call in: set once its job stops waiting for the call
_cancel_event: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "jobrunner_blocking_cancel", default=None
)


class BlockingCallCancelled(Exception):
    """Raised by `raise_if_cancelled()` in a pool thread whose job stopped waiting for it."""


def cancelled() -> bool:
    """True in a pool thread whose job no longer waits for it (timed out, cancelled, shutdown):
    whatever it returns will be discarded, so it may as well stop. False anywhere else."""
    event = _cancel_event.get()
    return event is not None and event.is_set()


def raise_if_cancelled() -> None:
    """Stop a blocking call whose job no longer waits for it (see `cancelled`)."""
    if cancelled():
        raise BlockingCallCancelled("the job stopped waiting for this call: its result would be discarded")


def run_cancellably(event: threading.Event, fn: Any, *args: Any) -> Any:
    """Call fn in a thread with `cancelled()` answering from `event` (the pools' entry point)."""
    _cancel_event.set(event)
    return fn(*args)


def call_by_reference(module: str, qualname: str, context: BlockingContext[Any]) -> Any:
    """Run a @blocking_handler's function in a worker process. Found by its name, because the name
    in its module is bound to the Handler the decorator made, which pickle cannot send as the
    function: the Handler's `blocking_func` is the function."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    target = getattr(target, "blocking_func", None) or target
    return target(context)


@dataclass(frozen=True)
class BlockingContext(Generic[PayloadT]):
    """What a `@blocking_handler` function gets: its job and validated payload. It crosses to a
    worker process by pickling, so it holds nothing but data (no pool, no client): a blocking
    handler that needs the database opens its own synchronous connection."""

    job: Job
    payload: PayloadT

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger whose every line carries job_id, job_type and attempt."""
        import structlog  # loaded by the daemon anyway: `import jobrunner` stays light

        job = self.job
        logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("jobrunner.handler")
        return logger.bind(job_id=job.id, job_type=job.job_type, attempt=job.attempt)

    @property
    def cancelled(self) -> bool:
        """See the module's `cancelled()`: True once the job stopped waiting for this call."""
        return cancelled()
