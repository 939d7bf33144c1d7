"""maintain_partitions: the app's month partitions, created ahead of time and filled from the default.

Every partitioned app table (`glow_analyses`, `style_analyses`, `progress_photos`, `api_metrics`)
has one partition per month (UTC) and a default partition that takes the rows of months without
one. Once a day the job asks `partitions_due` what is missing as of now: this month and the next
`partition_months_ahead` (3) months, and every month whose rows wait in a default partition
(written while nothing created partitions). It creates them one at a time, each in its own
transaction (`create_month_partition`, which moves the month's rows out of the default partition
in that transaction), so no lock outlives one partition.

A partition whose locks could not be had within 2 s is left for a retry: the job raises
RetryLater once the others are done. A month with more rows waiting than
`partition_move_max_rows` is left to an operator (the move holds the default partition's lock for
as long as it takes): the job fails, naming the statement to run in a quiet hour.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from jobrunner import JobContext, PermanentError, RetryLater, handler
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import app_settings

LOCK_RETRY_SECONDS = 60.0


class PartitionsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # each default: the plugin's setting
    months_ahead: int | None = Field(default=None, ge=3, le=36)
    max_move_rows: int | None = Field(default=None, ge=0)


def partition_name(parent: str, month: date) -> str:
    return f"{parent.rsplit('.', 1)[-1]}_p{month:%Y_%m}"


async def maintain_partitions_at(
    pool: asyncpg.Pool, *, months_ahead: int, max_move_rows: int | None, now: datetime | None = None
) -> dict[str, Any]:
    """Create what `partitions_due` lists as of `now` (None: the database's clock)."""
    created: list[dict[str, Any]] = []
    lock_timeouts: list[str] = []
    over_limit: list[dict[str, Any]] = []
    for due in await pool.fetch(sql("partitions_due"), months_ahead, now):
        name = partition_name(due["parent"], due["month"])
        try:
            row = await pool.fetchrow(sql("create_month_partition"), due["parent"], due["month"], max_move_rows)
        except asyncpg.LockNotAvailableError:
            lock_timeouts.append(name)
            continue
        except asyncpg.ProgramLimitExceededError:
            over_limit.append({"partition": name, "default_rows": due["default_rows"]})
            continue
        if row is not None:  # None: another maintainer created it meanwhile
            created.append({"partition": row["partition_name"], "moved_rows": row["moved_rows"]})
    return {
        "created": created,
        "moved_rows": sum(c["moved_rows"] for c in created),
        "lock_timeouts": lock_timeouts,
        "over_move_limit": over_limit,
    }


@handler("maintain_partitions", payload_model=PartitionsPayload, timeout=1800, max_concurrency=1)
async def maintain_partitions(ctx: JobContext[PartitionsPayload]) -> dict[str, Any]:
    settings = app_settings()
    max_move_rows = settings.partition_move_max_rows if ctx.payload.max_move_rows is None else ctx.payload.max_move_rows
    result = await maintain_partitions_at(
        ctx.pool,
        months_ahead=ctx.payload.months_ahead or settings.partition_months_ahead,
        max_move_rows=max_move_rows,
    )
    for made in result["created"]:
        ctx.log.info("partition created", partition=made["partition"], moved_rows=made["moved_rows"])
    if result["lock_timeouts"]:
        raise RetryLater(
            LOCK_RETRY_SECONDS,
            f"created {len(result['created'])} partitions; no lock within 2 s for "
            f"{', '.join(result['lock_timeouts'])} (a long transaction on the table): retrying",
        )
    if result["over_move_limit"]:
        waiting = ", ".join(f"{o['partition']} ({o['default_rows']} rows)" for o in result["over_move_limit"])
        raise PermanentError(
            f"created {len(result['created'])} partitions; more rows than JOBRUNNER_APP_PARTITION_MOVE_MAX_ROWS "
            f"({max_move_rows}) wait in the default partition for {waiting}: in a quiet hour run "
            "SELECT * FROM public.create_month_partition('<table>', '<YYYY-MM-01>') for each, "
            "or enqueue maintain_partitions with a larger max_move_rows"
        )
    return result
