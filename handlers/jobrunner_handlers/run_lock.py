"""One run at a time of a maintenance job, whichever replica runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from jobrunner_handlers.queries import sql


@asynccontextmanager
async def one_at_a_time(pool: asyncpg.Pool, job_type: str) -> AsyncIterator[bool]:
    """Yields whether this run holds the job type's lock (False: another run does). A session
    advisory lock on a connection of its own, held for the whole run: the run's own statements
    commit one by one on other connections."""
    async with pool.acquire() as conn:
        held: bool = await conn.fetchval(sql("try_job_lock"), job_type)
        try:
            yield held
        finally:
            if held:
                await conn.fetchval(sql("job_unlock"), job_type)
