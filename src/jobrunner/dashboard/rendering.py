"""Turning rows into HTML: Jinja2 with every value escaped, and the formats the pages share.

Payloads, results and progress are pretty-printed JSON with the keys named in
JOBRUNNER_DASHBOARD_REDACT_KEYS (at any depth) shown as [redacted], and every registered secret
masked (jobrunner.redaction), before they reach a template; the template escapes what is left.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import jinja2

from jobrunner.redaction import redact_text

REDACTED = "[redacted]"


def redact_keys(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k.lower() in keys else redact_keys(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_keys(item, keys) for item in value]
    return value


def pretty_json(text: str | None, keys: frozenset[str]) -> str:
    """JSON text as the job page shows it; not JSON at all (it always is, from jsonb) as is."""
    if text is None:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return redact_text(text)
    return redact_text(json.dumps(redact_keys(value, keys), indent=2, ensure_ascii=False, sort_keys=True))


def when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return ""
    delta = (now - value).total_seconds()
    return f"in {duration(-delta)}" if delta < 0 else f"{duration(delta)} ago"


def percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f} %"


def number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def make_environment(redact: Iterable[str]) -> jinja2.Environment:
    keys = frozenset(key.lower() for key in redact)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("jobrunner.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when,
        duration=duration,
        percent=percent,
        number=number,
        pretty_json=lambda text: pretty_json(text, keys),
        masked=lambda text: "" if text is None else redact_text(str(text)),
    )
    env.globals["ago"] = ago
    return env
