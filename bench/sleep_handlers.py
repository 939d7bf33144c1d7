"""A handler that only waits, for daemons started as processes by `bench.memory`:
`python -m jobrunner run --handlers bench.sleep_handlers`. With concurrency C and a wait of
`ms` milliseconds, about C jobs are in flight at once as long as the daemon claims faster than
C ÷ (ms / 1000) jobs per second."""

from __future__ import annotations

import asyncio
from typing import Any

from jobrunner import JobContext, handler


@handler("sleep")
async def sleep(ctx: JobContext[dict[str, Any]]) -> None:
    await asyncio.sleep(float(ctx.payload.get("ms", 1000)) / 1000)
