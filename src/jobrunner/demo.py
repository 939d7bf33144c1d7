"""`jobrunner demo`: the real daemon on a realistic mixed workload, on the embedded database.

The job types mimic the app's (image analysis, recommendations, push notifications, cleanup)
with simulated latencies instead of network calls, so the demo needs no account anywhere.
A few jobs fail on purpose: some are flaky and succeed on retry, some always fail and go dead,
one has an invalid payload and one has a job type nobody handles.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobrunner import event_loop
from jobrunner.client import AsyncClient
from jobrunner.context import JobContext
from jobrunner.daemon.daemon import Daemon
from jobrunner.database import DatabaseTarget, connect_kwargs
from jobrunner.display import status_table
from jobrunner.dsn import DatabaseUrl
from jobrunner.handler import handler
from jobrunner.migrate import migrate
from jobrunner.new_job import NewJob
from jobrunner.registry import HandlerRegistry
from jobrunner.retry import RetryPolicy
from jobrunner.settings import Settings
from jobrunner.sql_files import Queries, quote_identifier

DEMO_SCHEMA = "jobrunner_demo"
# short backoff so the demo's retries happen while you watch
DEMO_RETRY = RetryPolicy(base_delay=0.05, factor=2.0, max_delay=0.5)


# Payloads as the real handlers (handlers/jobrunner_handlers) take them.
class AnalyzeImage(BaseModel):
    user_id: UUID
    image: str
    kind: Literal["glow", "style"]
    fail_times: int = Field(default=0, ge=0, description="demo only: fail this many attempts first")


class UserJob(BaseModel):
    user_id: UUID


class Notification(BaseModel):
    user_id: UUID
    title: str = Field(max_length=200)
    body: str = Field(max_length=2000)


async def _simulated_work(low_ms: float, high_ms: float) -> None:
    await asyncio.sleep(random.uniform(low_ms, high_ms) / 1000)


@handler("analyze_image", payload_model=AnalyzeImage, retry=DEMO_RETRY, timeout=5)
async def demo_analyze_image(ctx: JobContext[AnalyzeImage]) -> dict[str, Any]:
    await _simulated_work(20, 120)  # a vision-model call
    if ctx.attempt <= ctx.payload.fail_times:
        raise ConnectionError("simulated upstream 503 from the vision API")
    score = random.randint(40, 95)
    user = str(ctx.payload.user_id)
    await ctx.enqueue("generate_recommendations", {"user_id": user}, concurrency_key=user)
    return {"overall_score": score}


@handler("generate_recommendations", payload_model=UserJob, retry=DEMO_RETRY)
async def demo_generate_recommendations(ctx: JobContext[UserJob]) -> dict[str, Any]:
    await _simulated_work(5, 30)
    return {"products": random.sample(range(1, 500), 5)}


@handler("send_notification", payload_model=Notification, retry=DEMO_RETRY)
async def demo_send_notification(ctx: JobContext[Notification]) -> None:
    await _simulated_work(2, 15)


@handler("cleanup_old_data", retry=DEMO_RETRY)
async def demo_cleanup(ctx: JobContext[dict[str, Any]]) -> dict[str, int]:
    await _simulated_work(50, 150)
    return {"deleted": random.randint(0, 100)}


DEMO_HANDLERS = [demo_analyze_image, demo_generate_recommendations, demo_send_notification, demo_cleanup]


def demo_workload(total: int, rng: random.Random) -> list[NewJob]:
    """A mixed workload with deliberate failures, in the proportions a consumer app sees."""
    jobs: list[NewJob] = []
    for i in range(total):
        user = str(UUID(int=rng.randint(1, max(1, total // 5))))
        roll = rng.random()
        if roll < 0.40:
            jobs.append(NewJob("send_notification", {"user_id": user, "title": "Your glow report", "body": "is ready"}))
        elif roll < 0.75:
            fail_times = 0
            if i % 50 == 0:
                fail_times = 1  # flaky: succeeds on the second attempt
            if i % 250 == 0:
                fail_times = 99  # always fails: dead after max_attempts
            jobs.append(
                NewJob(
                    "analyze_image",
                    {
                        "user_id": user,
                        "image": f"{user}/{i}.jpg",
                        "kind": rng.choice(["glow", "style"]),
                        "fail_times": fail_times,
                    },
                    priority=10,  # interactive: the user is waiting for it
                    max_attempts=3,
                    concurrency_key=user,  # as the app enqueues it (fairness between users)
                )
            )
        elif roll < 0.98:
            jobs.append(NewJob("generate_recommendations", {"user_id": user}))
        else:
            jobs.append(NewJob("cleanup_old_data", {}, priority=-10))
    jobs.append(NewJob("send_notification", {"user_id": "not-a-uuid", "title": 42}))  # invalid payload
    jobs.append(NewJob("resize_video", {"user_id": "nobody-handles-this"}))  # unknown job type
    return jobs


async def _count_finished(conn: asyncpg.Connection, queries: Queries) -> tuple[int, int]:
    rows = await conn.fetch(queries.status_counts)
    total = sum(r["jobs"] for r in rows)
    done = sum(r["jobs"] for r in rows if r["status"] in ("completed", "failed", "dead", "cancelled"))
    return done, total


async def _demo(url: DatabaseUrl, settings: Settings, jobs: int, concurrency: int, console: Console) -> int:
    settings = settings.model_copy(
        update={"schema_name": DEMO_SCHEMA, "concurrency": concurrency, "poll_interval": 0.05}
    )
    queries = Queries(DEMO_SCHEMA)
    conn = await asyncpg.connect(**connect_kwargs(url, settings.connect_timeout))
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(DEMO_SCHEMA)} CASCADE")
        await migrate(conn, DEMO_SCHEMA)
        workload = demo_workload(jobs, random.Random(7))
        started = time.perf_counter()
        await AsyncClient(conn, DEMO_SCHEMA).enqueue_many(workload)
        enqueue_seconds = time.perf_counter() - started
        console.print(f"enqueued [bold]{len(workload)}[/] jobs in {enqueue_seconds * 1000:.0f} ms (one bulk statement)")

        daemon = Daemon(settings, HandlerRegistry(DEMO_HANDLERS), url, burst=True)
        columns = (TextColumn("processing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        started = time.perf_counter()
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("jobs", total=len(workload))
            run = asyncio.create_task(daemon.run())
            while not run.done():
                done, total = await _count_finished(conn, queries)
                progress.update(bar, completed=done, total=total)
                await asyncio.wait({run}, timeout=0.2)
            stats = run.result()
            done, total = await _count_finished(conn, queries)
            progress.update(bar, completed=done, total=total)
        elapsed = time.perf_counter() - started

        counts = await conn.fetch(queries.status_counts)
        dead = await conn.fetch(queries.recent_dead, 5)
    finally:
        await conn.close()

    console.print(status_table(counts, title="background_jobs after the run"))
    summary = Table(title="Demo summary", show_header=False)
    summary.add_row("jobs processed (attempts)", str(stats.claimed))
    summary.add_row("wall time", f"{elapsed:.2f} s")
    summary.add_row("throughput", f"{stats.claimed / elapsed:,.0f} attempts/s at concurrency {concurrency}")
    summary.add_row("completed", str(stats.completed))
    summary.add_row("retried", str(stats.retried))
    summary.add_row("dead (attempts used up)", str(stats.dead))
    summary.add_row("failed (not retryable)", str(stats.failed))
    console.print(summary)
    if dead:
        console.print("[bold]Some failures, as stored on the jobs:[/]")
        for row in dead:
            console.print(escape(f"  #{row['id']} {row['job_type']} ({row['status']}): {row['last_error']}"))
    console.print(
        f"(the demo lives in schema {DEMO_SCHEMA}; inspect it with `JOBRUNNER_SCHEMA={DEMO_SCHEMA} jobrunner status`,"
        " or in a browser with `jobrunner dashboard`)"
    )
    return 0


def run_demo(settings: Settings, *, jobs: int, concurrency: int) -> int:
    console = Console()
    with DatabaseTarget(settings) as (url, _listen):
        where = "the embedded PostgreSQL" if settings.database_url is None else url.redacted()
        console.print(f"[bold]jobrunner demo[/] on {where}")
        return event_loop.run(_demo(url, settings, jobs, concurrency, console), settings.event_loop)
