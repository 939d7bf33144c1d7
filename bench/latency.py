"""Idle pick-up latency, measured the same way for every system the bench drives.

The worker runs in the measuring process and waits idle. Two samplers:
- `sample_pickups`: a job is enqueued and committed; the time from the commit returning to the
  handler starting is one sample (the narrower span, bench.run's and bench.compare's first
  pick-up figure);
- `sample_from_enqueue_call`: what a caller sees: one job every 10 ms through the system's public
  enqueue call on a connection of its own; per job the time from just before that call to the
  handler's first line, and, from the same jobs, from the call's return (committed) to it.
Standard library only: the peers' scripts (bench/peers/) import it from their own virtualenv.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

# a gap between samples so the worker is idle (waiting on LISTEN) when each job arrives
IDLE_GAP = 0.02
# how often the sampler looks whether the handler has started. It does not limit what a sample
# measures (the handler stamps its own start); it only has to leave the CPU to the worker and
# the database. Not shorter than 1 ms: uvloop rounds timers to whole milliseconds, and a 0.2 ms
# sleep there was a zero-length one, a busy loop that took a core from the database on a
# 2-core machine and put 3-5 ms into the p90 of the very latency it was measuring.
LOOK_EVERY = 0.001
PICKUP_DEADLINE = 60.0
# sample_from_enqueue_call: one job every ENQUEUE_EVERY seconds (from the start of one enqueue
# call to the next), the first WARMUP jobs of a run left out (the first claims and enqueues of
# a connection prepare their statements)
ENQUEUE_EVERY = 0.010
WARMUP = 10


async def sample_pickups(
    enqueue_one: Callable[[], Awaitable[Any]],
    started: dict[Any, float],
    samples: int,
    worker: asyncio.Task[Any],
) -> list[float]:
    """Milliseconds from commit to handler start, one per sample. `enqueue_one` commits a job
    and returns its id; the handler records `started[id] = time.perf_counter()`; `worker` is the
    task running the worker: a sample fails rather than waits forever when it ended or when the
    job is not picked up within PICKUP_DEADLINE (longer than every fallback poll in the bench)."""
    started.clear()
    latencies: list[float] = []
    for _ in range(samples):
        await asyncio.sleep(IDLE_GAP)
        job_id = await enqueue_one()
        committed = time.perf_counter()
        # polling rather than an event: the bench must not change the worker it measures
        while job_id not in started:
            await asyncio.sleep(LOOK_EVERY)
            if worker.done():
                raise RuntimeError(f"the worker stopped during the pick-up run: {worker!r}")
            if time.perf_counter() - committed > PICKUP_DEADLINE:
                raise TimeoutError(f"job {job_id} was not picked up within {PICKUP_DEADLINE} s")
        latencies.append((started[job_id] - committed) * 1000)
    return latencies


async def sample_from_enqueue_call(
    enqueue_one: Callable[[], Awaitable[Any]],
    started: dict[Any, float],
    samples: int,
    worker: asyncio.Task[Any],
    *,
    every: float = ENQUEUE_EVERY,
    warmup: int = WARMUP,
) -> dict[str, list[float]]:
    """Milliseconds per job, `samples` jobs after `warmup` more: "from_enqueue_call", from just
    before `enqueue_one()` (the public enqueue call; it commits and returns the job's id) to the
    handler's first line, which records `started[id] = time.perf_counter()`; "from_commit", from
    the call's return to the same line. The sampler does not look at the worker while jobs go
    in (no polling beside the worker it measures); it then waits for the last ones, and fails
    when `worker` ended or a job was not picked up within PICKUP_DEADLINE."""
    started.clear()
    sent: list[tuple[Any, float, float]] = []
    next_at = time.perf_counter()
    for n in range(warmup + samples):
        if (wait := next_at - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        before = time.perf_counter()
        job_id = await enqueue_one()
        committed = time.perf_counter()
        next_at = before + every
        if n >= warmup:
            sent.append((job_id, before, committed))
        if worker.done():
            raise RuntimeError(f"the worker stopped during the pick-up run: {worker!r}")
    deadline = time.perf_counter() + PICKUP_DEADLINE
    waiting = {job_id for job_id, _, _ in sent}
    while waiting := {job_id for job_id in waiting if job_id not in started}:
        if worker.done():
            raise RuntimeError(f"the worker stopped during the pick-up run: {worker!r}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(waiting)} jobs were not picked up within {PICKUP_DEADLINE} s")
        await asyncio.sleep(LOOK_EVERY)
    return {
        "from_enqueue_call": [(started[job_id] - before) * 1000 for job_id, before, _ in sent],
        "from_commit": [(started[job_id] - committed) * 1000 for job_id, _, committed in sent],
    }


def latency_summary(latencies_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[max(0, int(len(ordered) * 0.90) - 1)], 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
    }
