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

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from pydantic import BaseModel, ValidationError

from jobrunner.flows import OnParentFailure, checked_parents
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
    depends_on: Iterable[int] | None
    """Run only once these jobs finished: the job waits `blocked` until then (jobrunner.flows);
    not with `dedupe_key`."""
    on_parent_failure: OnParentFailure
    """With `depends_on`: what a parent that fails, dies or is cancelled does to this job:
    "cancel" it (the default) or "run" it anyway once every parent finished."""


def new_job(
    job_type: str, payload: Mapping[str, Any] | None, options: EnqueueOptions
) -> tuple[NewJob, tuple[list[int], OnParentFailure] | None]:
    """The job an enqueue call describes (checked when it is sent: `NewJob.validated`), and its
    parents and on_parent_failure when it depends on other jobs (checked here)."""
    fields = dict(options)
    depends_on = fields.pop("depends_on", None)
    on_parent_failure = fields.pop("on_parent_failure", "cancel")
    # what is left are NewJob's own fields (EnqueueOptions holds them and the two above)
    job = NewJob(job_type, {} if payload is None else payload, **fields)  # type: ignore[arg-type]
    if depends_on is None:
        if on_parent_failure != "cancel":
            raise InvalidJob("on_parent_failure is for a job with depends_on")
        return job, None
    return job, checked_parents(depends_on, on_parent_failure)


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
