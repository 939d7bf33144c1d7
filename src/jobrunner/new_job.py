"""Validation shared by every way of enqueueing from Python."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
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
# the defaults of NewJob, and of background_jobs' columns (enqueue_jobs reads a NULL column
# array as them)
_DEFAULT_QUEUE, _DEFAULT_PRIORITY, _DEFAULT_MAX_ATTEMPTS = "default", 0, 5


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON, no NaN or infinity, non-ASCII kept: `JSONEncoder(...).encode`, whose Python
    wrappers (a closure and a C encoder built per call, two frames) cost as much as encoding a
    small payload; bulk enqueue encodes each job's payload. Where json has its C accelerator,
    the C encoder is built directly, with the same arguments `encode` would give it and a fresh
    table of the containers being encoded (circular references are still refused)."""
    template = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    # not in typeshed: json's C accelerator, None where the interpreter has none
    make: Callable[..., Callable[[Any, int], Iterable[str]]] | None = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return template.encode
    default, string = template.default, json.encoder.encode_basestring

    def encode(value: Any) -> str:
        return "".join(make({}, default, string, None, ":", ",", False, False, False)(value, 0))

    return encode


_encode_json = _json_encoder()


def _require_utf8(text: str, name: str) -> None:
    if text.isascii():  # the common case, checked without encoding a copy
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"{name} contains text that is not valid Unicode (a lone surrogate): {exc.reason}") from exc


def _check_text(text: str, name: str) -> None:
    """Text PostgreSQL can store: no NUL, valid Unicode."""
    if "\x00" in text:
        raise InvalidJob(f"{name} contains a NUL character, which PostgreSQL text cannot store")
    _require_utf8(text, name)


def _is_int(value: object) -> bool:
    """An int and not a bool (which is one)."""
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


class InvalidJob(ValueError):
    """The job cannot be enqueued as given; the message says which argument is wrong."""


def payload_limit_error(constraint_name: str | None, message: str) -> InvalidJob | None:
    """The InvalidJob for the database's refusal of a payload over its limit, else None."""
    if constraint_name != PAYLOAD_SIZE_CONSTRAINT:
        return None
    return InvalidJob(f"{message} ({_PAYLOAD_HINT})")


# Internal: a job checked and ready to send, the `enqueue` query's arguments in order: job_type,
# payload_json, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key. A plain
# tuple: bulk enqueue builds one per job, and a named tuple took a sixth of the validation's time.
ValidatedJob = tuple[str, str, str, int, datetime | None, int, str | None, str | None]
_COLUMNS = 8


@dataclass(frozen=True)
class NewJob:
    job_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str = _DEFAULT_QUEUE
    priority: int = _DEFAULT_PRIORITY
    # when to run: an aware datetime, or a delay from now; None runs as soon as possible
    run_at: datetime | None = None
    delay: timedelta | float | None = None
    max_attempts: int = _DEFAULT_MAX_ATTEMPTS
    dedupe_key: str | None = None
    # fairness: jobs sharing a key (e.g. a user id) are limited together when their type has a
    # per-key limit
    concurrency_key: str | None = None

    def validated(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> ValidatedJob:
        return validate_job(
            self.job_type,
            self.payload,
            self.queue,
            self.priority,
            self.run_at,
            self.delay,
            self.max_attempts,
            self.dedupe_key,
            self.concurrency_key,
            max_payload_bytes,
        )


def validate_job(
    job_type: str,
    payload: Mapping[str, Any],
    queue: str,
    priority: int,
    run_at: datetime | None,
    delay: timedelta | float | None,
    max_attempts: int,
    dedupe_key: str | None,
    concurrency_key: str | None,
    max_payload_bytes: int,
) -> ValidatedJob:
    """NewJob's checks, for callers that have the arguments at hand (AsyncClient.enqueue builds
    no NewJob for them)."""
    # written for speed (bulk enqueue validates every job): the checks of each argument in
    # turn, the common case first, helpers only where the rare case needs them
    if not isinstance(job_type, str) or not 0 < len(job_type) <= 200:
        raise InvalidJob("job_type must be a non-empty string of at most 200 characters")
    if not isinstance(queue, str) or not 0 < len(queue) <= 200:
        raise InvalidJob("queue must be a non-empty string of at most 200 characters")
    if "\x00" in job_type or not job_type.isascii():
        _check_text(job_type, "job_type")
    if "\x00" in queue or not queue.isascii():
        _check_text(queue, "queue")
    if isinstance(dedupe_key, str):
        _check_text(dedupe_key, "dedupe_key")
    if isinstance(concurrency_key, str):
        _check_text(concurrency_key, "concurrency_key")
    # a dict is a Mapping; the ABC check is what costs
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise InvalidJob(f"payload must be a JSON object (a dict), not {type(payload).__name__}")
    try:
        payload_json = _encode_json(payload)
    except RecursionError as exc:
        raise InvalidJob("payload is nested too deeply to be stored as JSON") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"payload is not JSON-serialisable: {exc}") from exc
    if "\\u0000" in payload_json:
        raise InvalidJob("payload contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store")
    if payload_json.isascii():
        size = len(payload_json)
    else:
        _require_utf8(payload_json, "payload")
        size = len(payload_json.encode("utf-8"))
    if size > max_payload_bytes:
        raise InvalidJob(f"payload is {size} bytes of JSON; the limit is {max_payload_bytes} bytes ({_PAYLOAD_HINT})")
    if not (type(priority) is int or _is_int(priority)) or not _INT32_MIN <= priority <= _INT32_MAX:
        raise InvalidJob("priority must be an integer that fits in 32 bits")
    if not (type(max_attempts) is int or _is_int(max_attempts)) or not 1 <= max_attempts <= 1000:
        raise InvalidJob("max_attempts must be an integer from 1 to 1000")
    if dedupe_key is not None and (not isinstance(dedupe_key, str) or len(dedupe_key) > 500):
        raise InvalidJob("dedupe_key must be a string of at most 500 characters")
    if concurrency_key is not None and (not isinstance(concurrency_key, str) or len(concurrency_key) > 500):
        raise InvalidJob("concurrency_key must be a string of at most 500 characters")
    scheduled_at = None if run_at is None and delay is None else _scheduled_at(run_at, delay)
    return (job_type, payload_json, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)


def _scheduled_at(run_at: datetime | None, delay: timedelta | float | None) -> datetime | None:
    if run_at is not None and delay is not None:
        raise InvalidJob("give run_at or delay, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidJob(f"run_at must be a datetime, not {type(run_at).__name__}")
        if run_at.tzinfo is None:
            raise InvalidJob("run_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
        # asyncpg stores datetime.min/max as -infinity/infinity; keep to plain dates
        if not _EARLIEST <= run_at <= _LATEST:
            raise InvalidJob("run_at must be between the years 1970 and 9999")
        return run_at
    if delay is not None:
        try:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        except (TypeError, ValueError) as exc:
            raise InvalidJob(f"delay must be seconds or a timedelta, not {type(delay).__name__}") from exc
        if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_DELAY_SECONDS:
            raise InvalidJob("delay must be a finite number of seconds from 0 to 100 years")
        return datetime.now(UTC) + timedelta(seconds=seconds)
    return None


def bulk_columns(jobs: Iterable[ValidatedJob]) -> tuple[list[Any] | None, ...]:
    """The `enqueue_batch` query's parallel arrays, one per column. A column that every job
    leaves at its default is sent as NULL, which enqueue_jobs reads as that default for every
    job: no array to encode, send and unpack for an option the caller did not use."""
    columns = tuple(zip(*jobs, strict=True))
    if not columns:
        return (None,) * _COLUMNS
    job_types, payloads, queues, priorities, scheduled_ats, max_attempts, dedupe_keys, concurrency_keys = columns
    n = len(job_types)
    return (
        list(job_types),
        list(payloads),
        None if queues.count(_DEFAULT_QUEUE) == n else list(queues),
        None if priorities.count(_DEFAULT_PRIORITY) == n else list(priorities),
        None if scheduled_ats.count(None) == n else list(scheduled_ats),
        None if max_attempts.count(_DEFAULT_MAX_ATTEMPTS) == n else list(max_attempts),
        None if dedupe_keys.count(None) == n else list(dedupe_keys),
        None if concurrency_keys.count(None) == n else list(concurrency_keys),
    )
