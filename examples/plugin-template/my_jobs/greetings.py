"""The `greet` job type: records a greeting, once per job however often the job runs."""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobrunner import JobContext, handler, load_queries

QUERIES = load_queries("my_jobs", "sql/queries.sql")


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=100)


@handler("greet", payload_model=Greeting, timeout=10)
async def greet(ctx: JobContext[Greeting]) -> dict[str, int]:
    async with ctx.transaction() as conn:
        await conn.execute(QUERIES["record_greeting"], ctx.job.id, ctx.payload.name)
        total = await conn.fetchval(QUERIES["greetings_of"], ctx.payload.name)
    ctx.log.info("greeted", name=ctx.payload.name, total=total)
    return {"greetings": total}
