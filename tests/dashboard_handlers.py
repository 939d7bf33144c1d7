"""Handlers for the daemon the dashboard's browser tests run as a child process
(`jobrunner run --handlers tests.dashboard_handlers`)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jobrunner import JobContext, handler


@handler("flaky")
async def flaky(ctx: JobContext[dict[str, Any]]) -> None:
    """Fails while the file the payload names exists: the test removes it, then retries."""
    if await asyncio.to_thread(os.path.exists, ctx.payload["fail_while"]):
        raise RuntimeError(f"upstream unavailable while {ctx.payload['fail_while']} exists")


@handler("noop")
async def noop(_ctx: JobContext[dict[str, Any]]) -> None:
    pass
