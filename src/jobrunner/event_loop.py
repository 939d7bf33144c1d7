"""Which asyncio event loop the CLI runs on: uvloop where it is installed (the default install
has it on Linux and macOS), else the standard library's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import structlog

T = TypeVar("T")

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `asyncio.Runner`; None means the standard loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # settings refuse "uvloop" when it is missing: this is "auto"
        return None
    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_event_loop


# how long tasks still there when the main coroutine returns get to end once cancelled
LEFTOVER_TASK_WAIT = 1.0


def run(coro: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    runner = asyncio.Runner(loop_factory=loop_factory(choice))
    try:
        return runner.run(coro)
    finally:
        _close(runner)


def _close(runner: asyncio.Runner) -> None:
    """Runner.close(), unless a task ignores its cancellation (a job handler that swallows
    CancelledError, which the daemon stopped waiting for): Runner.close() would wait for it for
    ever, so the loop is closed without it and the process can exit."""
    loop = runner.get_loop()
    stuck = loop.run_until_complete(_cancel_leftover_tasks(LEFTOVER_TASK_WAIT))
    if not stuck:
        runner.close()
        return
    structlog.get_logger("jobrunner").warning(
        "exiting with tasks that ignore cancellation still running", tasks=sorted(t.get_name() for t in stuck)
    )
    with contextlib.suppress(Exception):
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), LEFTOVER_TASK_WAIT))
    # said once above: not again for each such task when it is collected
    loop.set_exception_handler(lambda _loop, _context: None)
    asyncio.set_event_loop(None)
    loop.close()


async def _cancel_leftover_tasks(seconds: float) -> set[asyncio.Task[Any]]:
    """Cancel every other task and wait up to `seconds`; returns those still not done."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    if not tasks:
        return set()
    for task in tasks:
        task.cancel()
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    loop = asyncio.get_running_loop()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {"message": "unhandled exception at shutdown", "exception": task.exception(), "task": task}
            )
    return pending
