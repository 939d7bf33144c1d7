"""Validation shared by every way of enqueueing from Python."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# The database's default limit (background_jobs_payload_size_check, set by the baseline), checked here
# first so that an oversized payload is not sent at all. The database measures the JSON text it
# prints (with a space after each ':' and ','), a few bytes more than this compact encoding: what
# passes here and not there is refused by the database, and the clients raise the same
# InvalidJob for it (payload_limit_error).
MAX_PAYLOAD_BYTES = 1024 * 1024
PAYLOAD_SIZE_CONSTRAINT = "background_jobs_payload_size_check"
_PAYLOAD_HINT = "store large data elsewhere and pass a reference"
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_MAX_DELAY_SECONDS = 100 * 365 * 86_400
# built once: json.dumps with any non-default argument builds a new encoder on every call
_encode_json = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode


def _require_utf8(text: str, name: str) -> None:
    if text.isascii():  # the common case, checked without encoding a copy
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"{name} contains text that is not valid Unicode (a lone surrogate): {exc.reason}") from exc


class InvalidJob(ValueError):
    """The job cannot be enqueued as given; the message says which argument is wrong."""


def payload_limit_error(constraint_name: str | None, message: str) -> InvalidJob | None:
    """The InvalidJob for the database's refusal of a payload over its limit, else None."""
    if constraint_name != PAYLOAD_SIZE_CONSTRAINT:
        return None
    return InvalidJob(f"{message} ({_PAYLOAD_HINT})")


@dataclass(frozen=True)
class NewJob:
    job_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    # when to run: an aware datetime, or a delay from now; None runs as soon as possible
    run_at: datetime | None = None
    delay: timedelta | float | None = None
    max_attempts: int = 5
    dedupe_key: str | None = None
    # fairness: jobs sharing a key (e.g. a user id) are limited together when their type has a
    # per-key limit
    concurrency_key: str | None = None

    def validated(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> ValidatedJob:
        if not isinstance(self.job_type, str) or not 0 < len(self.job_type) <= 200:
            raise InvalidJob("job_type must be a non-empty string of at most 200 characters")
        if not isinstance(self.queue, str) or not 0 < len(self.queue) <= 200:
            raise InvalidJob("queue must be a non-empty string of at most 200 characters")
        for name in ("job_type", "queue", "dedupe_key", "concurrency_key"):
            value = getattr(self, name)
            if isinstance(value, str):
                if "\x00" in value:
                    raise InvalidJob(f"{name} contains a NUL character, which PostgreSQL text cannot store")
                _require_utf8(value, name)
        # a dict is a Mapping; the ABC check is what costs (bulk enqueue validates every job)
        if type(self.payload) is not dict and not isinstance(self.payload, Mapping):
            raise InvalidJob(f"payload must be a JSON object (a dict), not {type(self.payload).__name__}")
        try:
            payload_json = _encode_json(self.payload)
        except RecursionError as exc:
            raise InvalidJob("payload is nested too deeply to be stored as JSON") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidJob(f"payload is not JSON-serialisable: {exc}") from exc
        if "\\u0000" in payload_json:
            raise InvalidJob("payload contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store")
        _require_utf8(payload_json, "payload")
        size = len(payload_json) if payload_json.isascii() else len(payload_json.encode("utf-8"))
        if size > max_payload_bytes:
            raise InvalidJob(
                f"payload is {size} bytes of JSON; the limit is {max_payload_bytes} bytes ({_PAYLOAD_HINT})"
            )
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not _INT32_MIN <= self.priority <= _INT32_MAX
        ):
            raise InvalidJob("priority must be an integer that fits in 32 bits")
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or not 1 <= self.max_attempts <= 1000
        ):
            raise InvalidJob("max_attempts must be an integer from 1 to 1000")
        if self.dedupe_key is not None and (not isinstance(self.dedupe_key, str) or len(self.dedupe_key) > 500):
            raise InvalidJob("dedupe_key must be a string of at most 500 characters")
        if self.concurrency_key is not None and (
            not isinstance(self.concurrency_key, str) or len(self.concurrency_key) > 500
        ):
            raise InvalidJob("concurrency_key must be a string of at most 500 characters")
        return ValidatedJob(
            job_type=self.job_type,
            payload_json=payload_json,
            queue=self.queue,
            priority=self.priority,
            scheduled_at=self._scheduled_at(),
            max_attempts=self.max_attempts,
            dedupe_key=self.dedupe_key,
            concurrency_key=self.concurrency_key,
        )

    def _scheduled_at(self) -> datetime | None:
        if self.run_at is not None and self.delay is not None:
            raise InvalidJob("give run_at or delay, not both")
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                raise InvalidJob(f"run_at must be a datetime, not {type(self.run_at).__name__}")
            if self.run_at.tzinfo is None:
                raise InvalidJob("run_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
            # asyncpg stores datetime.min/max as -infinity/infinity; keep to plain dates
            if not _EARLIEST <= self.run_at <= _LATEST:
                raise InvalidJob("run_at must be between the years 1970 and 9999")
            return self.run_at
        if self.delay is not None:
            try:
                seconds = self.delay.total_seconds() if isinstance(self.delay, timedelta) else float(self.delay)
            except (TypeError, ValueError) as exc:
                raise InvalidJob(f"delay must be seconds or a timedelta, not {type(self.delay).__name__}") from exc
            if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_DELAY_SECONDS:
                raise InvalidJob("delay must be a finite number of seconds from 0 to 100 years")
            return datetime.now(UTC) + timedelta(seconds=seconds)
        return None


@dataclass(slots=True)
class ValidatedJob:
    """Internal: built once per job and never changed (not frozen: a frozen dataclass sets each
    field through object.__setattr__, a quarter of what bulk validation cost)."""

    job_type: str
    payload_json: str
    queue: str
    priority: int
    scheduled_at: datetime | None
    max_attempts: int
    dedupe_key: str | None
    concurrency_key: str | None

    def enqueue_args(self) -> tuple[Any, ...]:
        """Arguments of the `enqueue` query, in order."""
        return (
            self.job_type,
            self.payload_json,
            self.queue,
            self.priority,
            self.scheduled_at,
            self.max_attempts,
            self.dedupe_key,
            self.concurrency_key,
        )


def bulk_columns(jobs: list[ValidatedJob]) -> tuple[list[Any], ...]:
    """Parallel arrays for the `enqueue_many` query."""
    return (
        [j.job_type for j in jobs],
        [j.payload_json for j in jobs],
        [j.queue for j in jobs],
        [j.priority for j in jobs],
        [j.scheduled_at for j in jobs],
        [j.max_attempts for j in jobs],
        [j.dedupe_key for j in jobs],
        [j.concurrency_key for j in jobs],
    )
