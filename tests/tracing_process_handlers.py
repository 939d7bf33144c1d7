"""Handlers for the traced daemon tests/test_tracing.py starts as a child process
(`jobrunner run --handlers tests.tracing_process_handlers`, JOBRUNNER_TRACING=true).

What an application does to export its spans, here to a file the test reads: the SDK's
TracerProvider with a span processor, set before the daemon runs (TRACING_TEST_SPANS_FILE).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from jobrunner import JobContext, handler

_spans_file = open(os.environ["TRACING_TEST_SPANS_FILE"], "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=_spans_file, formatter=_one_line)))
trace.set_tracer_provider(_provider)


@handler("traced_work")
async def traced_work(ctx: JobContext[dict[str, Any]]) -> str:
    with trace.get_tracer("tests").start_as_current_span("inside the handler"):
        return str(ctx.payload["value"])
