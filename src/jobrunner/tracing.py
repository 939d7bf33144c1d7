"""OpenTelemetry spans for jobs, linked across the queue (the `jobrunner[otel]` extra).

Enqueue: a PRODUCER span `enqueue <job_type>` around the insert, whose context (W3C
traceparent/tracestate) is stored in the payload under the reserved key `__jobrunner_trace`.
Execution: a CONSUMER span `run <job_type>` per attempt, the child of that stored context, with
the job's id, type, queue, attempt and outcome; the handler runs inside it, so its own spans and
the jobs it enqueues are its children.

Only imported where tracing is on: by the daemon when JOBRUNNER_TRACING is set, and by the
clients when the application has loaded OpenTelemetry itself (trace_context.py). jobrunner
configures no SDK or exporter: the application does, or `opentelemetry-instrument`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from jobrunner.job import Job
from jobrunner.trace_context import TRACE_KEY

_TRACER_NAME = "jobrunner"


def _tracer() -> trace.Tracer:
    # looked up on each use: the application may set its TracerProvider after importing us
    return trace.get_tracer(_TRACER_NAME)


def _job_attributes(job_type: str, queue: str) -> dict[str, Any]:
    return {
        "messaging.system": "jobrunner",
        "messaging.destination.name": queue,
        "jobrunner.job.type": job_type,
        "jobrunner.queue": queue,
    }


def _carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def with_carrier(payload: Any, carrier: Mapping[str, str]) -> Any:
    """The payload with the trace context under its reserved key (the caller's dict untouched).
    Anything but a mapping (or None, the empty payload) is left for the client to refuse."""
    if not carrier or not (payload is None or isinstance(payload, Mapping)):
        return payload
    traced = dict(payload or {})
    traced[TRACE_KEY] = dict(carrier)
    return traced


@contextmanager
def enqueue_span(job_type: str, queue: str, *, jobs: int = 1) -> Iterator[tuple[Span, dict[str, str]]]:
    """The enqueue span, current inside the block, and the carrier of its context to store."""
    name = f"enqueue {job_type}" if jobs == 1 else f"enqueue_many {job_type}"
    attributes = _job_attributes(job_type, queue)
    if jobs != 1:
        attributes["messaging.batch.message_count"] = jobs
    with _tracer().start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield span, _carrier()


def carrier_of(job: Job) -> dict[str, str] | None:
    """The trace context stored with the job, if any (looked for before parsing the payload)."""
    if TRACE_KEY not in job.payload_json:
        return None
    try:
        stored = json.loads(job.payload_json).get(TRACE_KEY)
    except ValueError:
        return None
    if not isinstance(stored, dict):
        return None
    return {str(k): str(v) for k, v in stored.items() if isinstance(v, str)}


class JobTracing:
    """The daemon's side: one CONSUMER span per attempt."""

    async def run(self, job: Job, attempt: Callable[[Job], Awaitable[Any]]) -> Any:
        """Run `attempt(job)` inside the job's span; the outcome it returns names the span's end."""
        carrier = carrier_of(job)
        parent = propagate.extract(carrier) if carrier else otel_context.Context()
        attributes = _job_attributes(job.job_type, job.queue)
        attributes.update(
            {
                "messaging.message.id": str(job.id),
                "jobrunner.job.id": job.id,
                "jobrunner.attempt": job.attempt,
            }
        )
        with _tracer().start_as_current_span(
            f"run {job.job_type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                outcome = await attempt(job)
            except BaseException as exc:
                # stopped by the daemon (timeout handled inside; a cancel request, shutdown, a lost
                # lease): the executor decides how the job ends
                span.set_attribute("jobrunner.outcome", "interrupted")
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))
                raise
            name = getattr(outcome, "name", "unknown")
            span.set_attribute("jobrunner.outcome", name)
            error = getattr(outcome, "error", None)
            if name in ("retried", "failed", "dead"):
                span.set_status(Status(StatusCode.ERROR, str(error)[:500] if error else name))
            return outcome
