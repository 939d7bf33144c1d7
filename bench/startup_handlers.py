"""The probe of `bench.startup`: `jobrunner run --burst --handlers bench.startup_handlers`.

Its one job runs after the daemon's first claim and returns when the daemon opened its first
connection (the oldest client session of the bench's database, which the bench leaves to the
daemon alone while it runs), so that the bench can tell connect → first claim from the job's
`started_at`, which the claim sets."""

from __future__ import annotations

from typing import Any

from jobrunner import JobContext, handler


@handler("startup_probe")
async def startup_probe(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        first_connect = await conn.fetchval(
            "SELECT min(backend_start) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
        )
    return {"first_connect": first_connect.isoformat()}
