"""Handlers that end the ways a careless handler does, for tests/test_handler_endings.py
(loaded by child daemons with `run --handlers tests.ending_process_handlers`)."""

from __future__ import annotations

import asyncio
from typing import Any

from jobrunner import JobContext, handler
from tests.process_handlers import QUICK_RETRY


class HandlerOwnBaseException(BaseException):
    """Neither an Exception nor one of Python's own: what a library's control-flow signal looks like."""


_BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "HandlerOwnBaseException": HandlerOwnBaseException,
}


@handler("raise_base_exception", retry=QUICK_RETRY)
async def raise_base_exception(ctx: JobContext[dict[str, Any]]) -> None:
    """Raise the BaseException named by payload["kind"] (SystemExit(2) for SystemExit)."""
    kind = _BASE_EXCEPTIONS[str(ctx.payload["kind"])]
    raise kind(2) if kind is SystemExit else kind("raised by the handler")


@handler("inner_task_cancelled", retry=QUICK_RETRY)
async def inner_task_cancelled(_ctx: JobContext[dict[str, Any]]) -> None:
    """Await an inner task that something cancelled: its CancelledError reaches the handler's caller."""
    inner = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    inner.cancel()
    await inner


@handler("cancels_own_task", retry=QUICK_RETRY)
async def cancels_own_task(_ctx: JobContext[dict[str, Any]]) -> None:
    """Cancel the task it runs in: a cancellation, but not one jobrunner asked for."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(3600)


async def _ignore_cancellation() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # carry on as if nothing happened


@handler("swallow_cancel")
async def swallow_cancel(_ctx: JobContext[dict[str, Any]]) -> None:
    """Catch every CancelledError and keep sleeping: no timeout, cancel or shutdown stops it."""
    await _ignore_cancellation()


@handler("swallow_cancel_with_timeout", timeout=0.5)
async def swallow_cancel_with_timeout(_ctx: JobContext[dict[str, Any]]) -> None:
    """The same, with a 0.5 s handler timeout that it ignores."""
    await _ignore_cancellation()
