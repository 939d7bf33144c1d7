"""Handlers for the cross-process cancellation test (loaded with `run --handlers`)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from jobrunner import JobContext, handler


class Sleep(BaseModel):
    seconds: float


@handler("process_sleep", payload_model=Sleep)
async def process_sleep(ctx: JobContext[Sleep]) -> None:
    await asyncio.sleep(ctx.payload.seconds)
