"""Where a job's trace context lives, and the clients' enqueue spans, at no cost without tracing.

The context of the code that enqueued a job travels in its payload under the reserved key
`__jobrunner_trace` ({"traceparent": ..., "tracestate": ...}, W3C Trace Context); the daemon
takes it out before a handler sees the payload. The clients add it only when the application has
loaded OpenTelemetry (`opentelemetry.trace` is imported) and the enqueue happens inside a span:
otherwise nothing is imported, the payload is sent as given, and an enqueue costs one dictionary
lookup more.

The clients' enqueue methods are wrapped (`@traced_enqueue` …) rather than edited, so that what
they do stays in one place and tracing in another.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

# the payload key that holds a job's trace context; a payload may not use it for anything else
TRACE_KEY = "__jobrunner_trace"

F = TypeVar("F", bound=Callable[..., Any])


def _in_a_trace() -> bool:
    """Whether the caller runs inside a span: OpenTelemetry loaded by the application (never
    imported here otherwise) and a valid span current. Code outside any trace enqueues as if
    tracing were off: nothing to continue, and its payload stays as it was given."""
    if "opentelemetry.trace" not in sys.modules:
        return False
    from opentelemetry import trace

    return trace.get_current_span().get_span_context().is_valid


def _one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """enqueue(job_type, payload=None, *, queue=…): its job type and queue, and its arguments
    with the payload given by keyword (so that it can be replaced)."""
    job_type, rest = args[0], args[1:]
    kwargs = dict(kwargs)
    if rest:
        kwargs["payload"], rest = rest[0], rest[1:]
    return str(job_type), str(kwargs.get("queue", "default")), rest, kwargs


def traced_enqueue(method: F) -> F:
    """An async enqueue(self, job_type, payload=None, *, queue=…, …) inside an enqueue span whose
    context goes into the payload."""

    @functools.wraps(method)
    async def enqueue(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _in_a_trace():
            return await method(self, *args, **kwargs)
        from jobrunner import tracing

        job_type, queue, rest, kwargs = _one(args, kwargs)
        with tracing.enqueue_span(job_type, queue) as (span, carrier):
            kwargs["payload"] = tracing.with_carrier(kwargs.get("payload"), carrier)
            job_id = await method(self, job_type, *rest, **kwargs)
            span.set_attribute("jobrunner.job.id", job_id)
            return job_id

    return cast(F, enqueue)


def traced_enqueue_sync(method: F) -> F:
    """The same for the synchronous client."""

    @functools.wraps(method)
    def enqueue(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _in_a_trace():
            return method(self, *args, **kwargs)
        from jobrunner import tracing

        job_type, queue, rest, kwargs = _one(args, kwargs)
        with tracing.enqueue_span(job_type, queue) as (span, carrier):
            kwargs["payload"] = tracing.with_carrier(kwargs.get("payload"), carrier)
            job_id = method(self, job_type, *rest, **kwargs)
            span.set_attribute("jobrunner.job.id", job_id)
            return job_id

    return cast(F, enqueue)


def _many(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], str, str]:
    jobs = list(args[0] if args else kwargs.pop("jobs"))
    job_types = {job.job_type for job in jobs}
    queues = {job.queue for job in jobs}
    return jobs, job_types.pop() if len(job_types) == 1 else "(mixed)", queues.pop() if len(queues) == 1 else "(mixed)"


def traced_enqueue_many(method: F) -> F:
    """An async enqueue_many(self, jobs, …) inside one enqueue span, its context in every payload."""

    @functools.wraps(method)
    async def enqueue_many(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _in_a_trace():
            return await method(self, *args, **kwargs)
        from jobrunner import tracing

        kwargs = dict(kwargs)
        jobs, job_type, queue = _many(args, kwargs)
        with tracing.enqueue_span(job_type, queue, jobs=len(jobs)) as (_span, carrier):
            traced = [replace(job, payload=tracing.with_carrier(job.payload, carrier)) for job in jobs]
            return await method(self, traced, *args[1:], **kwargs)

    return cast(F, enqueue_many)


def traced_enqueue_many_sync(method: F) -> F:
    """The same for the synchronous client."""

    @functools.wraps(method)
    def enqueue_many(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _in_a_trace():
            return method(self, *args, **kwargs)
        from jobrunner import tracing

        kwargs = dict(kwargs)
        jobs, job_type, queue = _many(args, kwargs)
        with tracing.enqueue_span(job_type, queue, jobs=len(jobs)) as (_span, carrier):
            traced = [replace(job, payload=tracing.with_carrier(job.payload, carrier)) for job in jobs]
            return method(self, traced, *args[1:], **kwargs)

    return cast(F, enqueue_many)


def without_trace(decoded: Any) -> Any:
    """A decoded payload as its handler sees it: without the reserved trace key."""
    if type(decoded) is dict and TRACE_KEY in decoded:
        decoded = {k: v for k, v in decoded.items() if k != TRACE_KEY}
    return decoded
