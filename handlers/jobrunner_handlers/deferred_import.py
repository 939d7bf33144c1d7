"""SDKs that take a tenth of a second or more to import (openai, Pillow with its decoders) load on
the first job that needs them, not when the daemon starts: a replica that only runs other job
types never pays for them, and none waits for them before its first claim."""

from __future__ import annotations

import asyncio
import importlib
import sys


async def import_off_loop(name: str) -> None:
    """Import module `name` in a thread unless it is imported already, so that the daemon's
    other jobs keep running meanwhile. A job that asks while another job's thread is still
    importing it gets the module once that import is done (Python's per-module import lock)."""
    if name not in sys.modules:
        await asyncio.to_thread(importlib.import_module, name)
