"""Which asyncio event loop the CLI runs on: uvloop where it is installed (the default install
has it on Linux and macOS), else the standard library's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

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


def run(coro: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)
