"""The time the daemon's parts read and wait on: the event loop's, or a test's fake one."""

from __future__ import annotations

import asyncio


async def sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True early if `event` is set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Clock:
    """The running event loop's monotonic clock. Tests pass a subclass whose time moves only
    when something waits on it, to check what waits how long without waiting themselves."""

    def __init__(self) -> None:
        # looked up once: get_running_loop() costs a getpid() on each call
        self._loop: asyncio.AbstractEventLoop | None = None

    def time(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    async def sleep_unless(self, event: asyncio.Event, seconds: float) -> bool:
        """Sleep up to `seconds`; return True early if `event` is set."""
        return await sleep_unless(event, seconds)
