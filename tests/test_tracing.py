"""Tracing: the enqueuer's span context is stored with the job, and the daemon's span for each
attempt is its child, with the job's id, type, queue, attempt and outcome; the handler's own
spans and the jobs it enqueues are children of that span. Nothing of OpenTelemetry is imported
where tracing is off. Spans are checked with the SDK's in-memory exporter (this process) and a
file exporter (a real `jobrunner run` process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ConfigDict

from jobrunner import AsyncClient, InvalidJob, JobContext, NewJob, PermanentError, handler
from jobrunner.trace_context import TRACE_KEY
from tests import test_processes
from tests.support import REPO_ROOT, job_row, running_daemon, wait_for
from tests.test_processes import Children
from tests.test_startup_imports import run_recording_modules

children = test_processes.children

STATUS = "SELECT status FROM background_jobs WHERE id = $1"
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The global TracerProvider (set once per process, as an application does) and its spans."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


@handler("traced_parent", payload_model=Strict)
async def traced_parent(ctx: JobContext[Strict]) -> int:
    with trace.get_tracer("tests").start_as_current_span("handler work"):
        await ctx.enqueue("traced_child", {"value": ctx.payload.value + 1})
    return ctx.payload.value


@handler("traced_child")
async def traced_child(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    return ctx.payload  # what the handler sees: no trace key


@handler("traced_failure")
async def traced_failure(_ctx: JobContext[dict[str, Any]]) -> None:
    raise PermanentError("no")


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in finished if s.name == name]
    assert len(found) == 1, [s.name for s in finished]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_job_runs_in_a_child_of_the_span_that_enqueued_it(
    db_url: str, conn: asyncpg.Connection, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    client = AsyncClient(pool)
    with trace.get_tracer("tests").start_as_current_span("web request"):
        job_id = await client.enqueue("traced_parent", {"value": 41}, queue="traced")
    stored = json.loads((await job_row(conn, job_id))["payload"])
    assert set(stored) == {"value", TRACE_KEY}
    assert stored[TRACE_KEY]["traceparent"].startswith("00-")

    async with running_daemon(db_url, [traced_parent, traced_child], queues=["traced", "default"], tracing=True):
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=2)
    child_row = await conn.fetchrow("SELECT id, result FROM background_jobs WHERE job_type = 'traced_child'")
    assert json.loads(child_row["result"]) == {"value": 42}

    finished = spans.get_finished_spans()
    request = by_name(finished, "web request")
    enqueue = by_name(finished, "enqueue traced_parent")
    run = by_name(finished, "run traced_parent")
    work = by_name(finished, "handler work")
    child_enqueue = by_name(finished, "enqueue traced_child")
    child_run = by_name(finished, "run traced_child")
    # one trace, across the queue and a follow-up job
    assert {s.context.trace_id for s in finished} == {request.context.trace_id}
    assert parent_of(enqueue) == request.context.span_id
    assert parent_of(run) == enqueue.context.span_id
    assert parent_of(work) == run.context.span_id
    assert parent_of(child_enqueue) == work.context.span_id
    assert parent_of(child_run) == child_enqueue.context.span_id
    assert enqueue.kind is trace.SpanKind.PRODUCER and run.kind is trace.SpanKind.CONSUMER
    assert enqueue.attributes is not None and enqueue.attributes["jobrunner.job.id"] == job_id
    assert dict(run.attributes or {}) == {
        "messaging.system": "jobrunner",
        "messaging.destination.name": "traced",
        "messaging.message.id": str(job_id),
        "jobrunner.job.type": "traced_parent",
        "jobrunner.queue": "traced",
        "jobrunner.job.id": job_id,
        "jobrunner.attempt": 1,
        "jobrunner.outcome": "completed",
    }
    assert child_run.attributes is not None and child_run.attributes["jobrunner.job.id"] == child_row["id"]


async def test_a_failed_attempt_is_an_error_span_and_untraced_jobs_start_their_own_trace(
    db_url: str, conn: asyncpg.Connection, spans: InMemorySpanExporter
) -> None:
    # enqueued from SQL: no trace context stored, the run span is a root
    job_id = await conn.fetchval("SELECT enqueue_job('traced_failure')")
    async with running_daemon(db_url, [traced_failure], tracing=True):
        await wait_for(conn, STATUS, job_id, expect="failed")
    run = by_name(spans.get_finished_spans(), "run traced_failure")
    assert run.parent is None
    assert run.attributes is not None and run.attributes["jobrunner.outcome"] == "failed"
    assert run.status.status_code is trace.StatusCode.ERROR
    assert "PermanentError: no" in (run.status.description or "")


async def test_enqueue_many_stores_one_context_in_every_job(
    conn: asyncpg.Connection, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("tests").start_as_current_span("batch"):
        ids = await AsyncClient(pool).enqueue_many([NewJob("traced_child", {"n": n}) for n in range(3)])
    span = by_name(spans.get_finished_spans(), "enqueue_many traced_child")
    rows = await conn.fetch("SELECT payload FROM background_jobs WHERE id = ANY($1::bigint[])", ids)
    # version-trace id-parent id-flags
    parents = {json.loads(r["payload"])[TRACE_KEY]["traceparent"].rsplit("-", 1)[0] for r in rows}
    assert parents == {f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"}


async def test_code_outside_a_trace_enqueues_as_given(
    conn: asyncpg.Connection, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    """OpenTelemetry loaded, no span current: no enqueue span, the payload unchanged; and in a
    span, a payload that is not an object is still refused as one."""
    client = AsyncClient(pool)
    job_id = await client.enqueue("traced_child", {"value": 1})
    assert json.loads((await job_row(conn, job_id))["payload"]) == {"value": 1}
    assert spans.get_finished_spans() == ()
    with trace.get_tracer("tests").start_as_current_span("request"), pytest.raises(InvalidJob, match="JSON object"):
        await client.enqueue("traced_child", [])  # type: ignore[arg-type]


async def test_without_tracing_the_job_keeps_no_context(
    db_url: str, conn: asyncpg.Connection, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    """The daemon with tracing off makes no span, even where OpenTelemetry is loaded."""
    job_id = await conn.fetchval("SELECT enqueue_job('traced_child', '{\"value\": 1}')")
    async with running_daemon(db_url, [traced_child]):
        await wait_for(conn, STATUS, job_id, expect="completed")
    assert [s.name for s in spans.get_finished_spans()] == []


def test_nothing_of_opentelemetry_is_imported_where_tracing_is_off(db_url: str, tmp_path: Path) -> None:
    modules_file = tmp_path / "modules.json"
    done = run_recording_modules(db_url, modules_file, "run", "--burst")
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(modules_file.read_text()))
    assert "jobrunner.daemon.daemon" in imported
    assert not [name for name in imported if name.split(".")[0] == "opentelemetry"]
    assert "jobrunner.tracing" not in imported
    # an application that enqueues without OpenTelemetry loads none of it either
    script = (
        "import asyncio, os, sys, asyncpg\n"
        "from jobrunner import AsyncClient\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
        "    await AsyncClient(conn).enqueue('noop')\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'opentelemetry' or n == 'jobrunner.tracing'))\n"
    )
    env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    enqueued = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert enqueued.returncode == 0, enqueued.stderr
    assert enqueued.stdout.strip() == "[]"


@pytest.mark.process
async def test_a_daemon_process_continues_the_enqueuers_trace(
    db_url: str,
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    children: Children,
    tmp_path: Path,
    spans: InMemorySpanExporter,
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    with trace.get_tracer("tests").start_as_current_span("web request"):
        job_id = await AsyncClient(pool).enqueue("traced_work", {"value": 7})
    enqueue = by_name(spans.get_finished_spans(), "enqueue traced_work")
    daemon = children.start(
        db_url,
        "run",
        "--handlers",
        "tests.tracing_process_handlers",
        env={"JOBRUNNER_TRACING": "true", "TRACING_TEST_SPANS_FILE": str(spans_file)},
    )
    await wait_for(conn, STATUS, job_id, expect="completed", timeout=60)
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(30) == 0
    exported = {s["name"]: s for s in map(json.loads, spans_file.read_text().splitlines())}
    run, inside = exported["run traced_work"], exported["inside the handler"]
    assert run["context"]["trace_id"] == f"0x{enqueue.context.trace_id:032x}"
    assert run["parent_id"] == f"0x{enqueue.context.span_id:016x}"
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["attributes"]["jobrunner.job.id"] == job_id
    assert run["attributes"]["jobrunner.outcome"] == "completed"
    assert inside["parent_id"] == run["context"]["span_id"]


@pytest.mark.parametrize(
    "forged",
    [
        "not an object",
        {"traceparent": "00-zz-not-a-trace-01"},
        {"traceparent": ["00-list"], "tracestate": {"a": 1}},
        {"traceparent": "00-" + "f" * 5000 + "-01", "tracestate": ",".join(f"k{i}=v" for i in range(500))},
    ],
)
async def test_a_forged_trace_context_in_a_plain_insert_starts_a_trace_of_its_own(
    db_url: str, conn: asyncpg.Connection, spans: InMemorySpanExporter, forged: Any
) -> None:
    # a hostile payload may carry anything under the reserved key: the job still runs, in a
    # root span, and its handler never sees the key
    job_id = await conn.fetchval(
        "SELECT enqueue_job('traced_child', jsonb_build_object('value', 1, $1::text, $2::jsonb))",
        TRACE_KEY,
        json.dumps(forged),
    )
    async with running_daemon(db_url, [traced_child], tracing=True):
        await wait_for(conn, STATUS, job_id, expect="completed")
    assert json.loads((await job_row(conn, job_id))["result"]) == {"value": 1}
    run = by_name(spans.get_finished_spans(), "run traced_child")
    assert run.parent is None
