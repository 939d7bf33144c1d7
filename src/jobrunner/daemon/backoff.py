"""Waiting between reconnect attempts of the daemon's service loops."""

from __future__ import annotations

import asyncio

from jobrunner.retry import RetryPolicy

RECONNECT_POLICY = RetryPolicy(base_delay=0.1, factor=2.0, max_delay=10.0)


async def sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True early if `event` is set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
