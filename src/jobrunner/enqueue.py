"""The enqueue options, defined once, and typed enqueue from a handler.

Every way of enqueueing one job from Python takes the same keywords after the payload:
`AsyncClient.enqueue`, `Client.enqueue`, `JobContext.enqueue` and a handler's own `enqueue`
and `enqueue_sync`. They are `EnqueueOptions`, written here and nowhere else; each entry point
takes them as `**options: Unpack[EnqueueOptions]`, so a type checker checks their names and
types at the call, and builds the job with `new_job`: a `NewJob` holds their defaults.

A handler's `enqueue` (jobrunner.handler) checks the payload against the handler's payload model
before anything is sent (`checked_payload`): a payload that does not fit raises `InvalidJob` in
the caller, where a string-typed enqueue would store it and leave the job to fail later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from pydantic import BaseModel, ValidationError

from jobrunner.new_job import InvalidJob, NewJob

if TYPE_CHECKING:
    from jobrunner.statements import AsyncConnection


class EnqueueOptions(TypedDict, total=False):
    """How one job is enqueued, besides its type and payload; every key is optional, with the
    default of `NewJob` (and of the table's column)."""

    queue: str
    """The queue it goes to ("default")."""
    priority: int
    """Higher runs first (a 32-bit integer, 0)."""
    run_at: datetime | None
    """When it becomes runnable: an aware datetime (None: at once)."""
    delay: timedelta | float | None
    """Or runnable this long from now (seconds or a timedelta); not with `run_at`."""
    max_attempts: int
    """Attempts before it ends dead (1–1000, 5)."""
    dedupe_key: str | None
    """While a pending or running job holds this key, enqueue nothing and return that job's id."""
    concurrency_key: str | None
    """Group the job with others of its type holding this key for a per-key limit."""


def new_job(job_type: str, payload: Mapping[str, Any] | None, options: EnqueueOptions) -> NewJob:
    """The job an enqueue call describes (checked when it is sent: `NewJob.validated`)."""
    return NewJob(job_type, {} if payload is None else payload, **options)


def checked_payload(
    job_type: str, model: type[BaseModel] | None, payload: BaseModel | Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """`payload` as the job's JSON object, checked against `model` (the handler's payload model)
    as the daemon will check it: an instance of the model, or a mapping the model accepts.
    Without a model any mapping goes, as with a string-typed enqueue."""
    if model is None:
        if isinstance(payload, BaseModel):
            return payload.model_dump(mode="json", by_alias=True)
        return payload
    if isinstance(payload, BaseModel) and not isinstance(payload, model):
        raise InvalidJob(f"{job_type} takes a {model.__name__} payload, not a {type(payload).__name__}")
    try:
        checked = payload if isinstance(payload, model) else model.model_validate({} if payload is None else payload)
    except ValidationError as exc:
        raise InvalidJob(f"payload does not fit {job_type}'s {model.__name__}: {exc}") from exc
    # as JSON (a UUID as its text, a datetime in ISO 8601), by the names the model reads back
    return checked.model_dump(mode="json", by_alias=True)


class AsyncEnqueuer(Protocol):
    """What a handler's `enqueue` enqueues through: an `AsyncClient` or a `JobContext`."""

    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: AsyncConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> int: ...
