"""structlog set-up: JSON lines in production, a readable console on a terminal.

Every rendered line passes through `redact_text`: registered secret values and credentials in
URLs are masked whatever field, nesting or traceback carried them there."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

from jobrunner.display import printable
from jobrunner.redaction import redact_text


class RedactingRenderer:
    """Wraps the final renderer: masks secrets in the line it produced."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: structlog.typing.EventDict) -> Any:
        rendered = self._renderer(logger, method_name, event_dict)
        return redact_text(rendered) if isinstance(rendered, str) else rendered


def _printable_values(_logger: Any, _method_name: str, event_dict: structlog.typing.EventDict) -> Any:
    """On a terminal, job data must not carry escape sequences the terminal would obey."""
    return {key: printable(value) if isinstance(value, str) else value for key, value in event_dict.items()}


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "info") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False))
        if use_console
        else structlog.processors.JSONRenderer()
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_console:
        processors.append(_printable_values)
    else:
        # no local variables in tracebacks: they can hold payloads, tokens and keys
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors.append(structlog.processors.ExceptionRenderer(transformer))
    processors.append(RedactingRenderer(renderer))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
