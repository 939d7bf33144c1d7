"""Handlers that snooze, for the daemons tests/test_snooze.py starts as child processes
(`jobrunner run --handlers tests.snooze_process_handlers`)."""

from __future__ import annotations

from typing import Any

from jobrunner import BlockingContext, JobContext, Snooze, blocking_handler, handler


@handler("wait_for_upstream")
async def wait_for_upstream(ctx: JobContext[dict[str, Any]]) -> dict[str, int]:
    """Snoozes until its job has snoozed `times` times (as a job polling an external one would
    until that one is done), then completes with what it saw."""
    async with ctx.transaction() as conn:
        snoozes = await conn.fetchval("SELECT snoozes FROM background_jobs WHERE id = $1", ctx.job.id)
    if snoozes < int(ctx.payload["times"]):
        raise Snooze(float(ctx.payload.get("seconds", 0)), "the upstream job is not done yet")
    return {"snoozes": snoozes, "attempt": ctx.attempt}


@blocking_handler("snooze_in_process", runs_in="process", max_snoozes=1)
def snooze_in_process(_ctx: BlockingContext[dict[str, Any]]) -> None:
    """Always snoozes, from a worker process: the Snooze crosses back pickled."""
    raise Snooze(0, "still waiting")
