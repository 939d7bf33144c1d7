"""The bench's no-op handler, for daemons started as processes:
`python -m jobrunner run --burst --handlers bench.noop_handlers` (bench/compare.py, replicas)."""

from __future__ import annotations

from typing import Any

from jobrunner import JobContext, handler


@handler("noop")
async def noop(ctx: JobContext[dict[str, Any]]) -> None:
    return None
