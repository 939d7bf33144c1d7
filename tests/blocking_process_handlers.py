"""Blocking handlers for tests/test_blocking_handlers.py: its child daemons load them with
`jobrunner run --handlers tests.blocking_process_handlers`, and the process pool's workers find
them here by name."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from jobrunner import BlockingContext, blocking_handler


def spin(seconds: float) -> int:
    """Pure-Python CPU work holding the GIL for `seconds`: how many loops it made."""
    loops = 0
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        loops += 1
    return loops


@blocking_handler("sleep_in_thread", runs_in="thread")
def sleep_in_thread(ctx: BlockingContext[dict[str, Any]]) -> str:
    """Blocks its thread for `seconds` (time.sleep, as a synchronous client waiting on a socket)."""
    time.sleep(float(ctx.payload["seconds"]))
    return threading.current_thread().name


@blocking_handler("spin_in_process", runs_in="process")
def spin_in_process(ctx: BlockingContext[dict[str, Any]]) -> dict[str, int]:
    """Holds the GIL of a worker process for `seconds`."""
    return {"pid": os.getpid(), "loops": spin(float(ctx.payload["seconds"]))}


@blocking_handler("die_in_process", runs_in="process")
def die_in_process(ctx: BlockingContext[dict[str, Any]]) -> int:
    """Kills its worker process on its first attempt (a crash in C code, the OOM killer)."""
    if ctx.attempt == 1:
        os._exit(1)
    return os.getpid()
