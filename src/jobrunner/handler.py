"""A handler: an async function registered under a job type, with its options."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from jobrunner.limits import GlobalLimits
from jobrunner.retry import DEFAULT_RETRY_POLICY, RetryPolicy

if TYPE_CHECKING:
    from jobrunner.context import JobContext

HandlerFunc = Callable[["JobContext[Any]"], Awaitable[Any]]


@dataclass(frozen=True)
class Handler:
    job_type: str
    func: HandlerFunc
    payload_model: type[BaseModel] | None = None
    retry: RetryPolicy = DEFAULT_RETRY_POLICY
    # seconds; None: the daemon's default_timeout
    timeout: float | None = None
    # most jobs of this type running at once in one daemon; None: no limit but concurrency
    max_concurrency: int | None = None
    # called once at daemon start: returns what is missing (e.g. "OPENAI_API_KEY is not set")
    # or None; the daemon starts anyway and logs it once
    startup_check: Callable[[], str | None] | None = None
    # limits across all replicas, enforced by the database when claiming
    limits: GlobalLimits | None = None

    def __post_init__(self) -> None:
        if not self.job_type or len(self.job_type) > 200:
            raise ValueError("a handler's job_type must be 1 to 200 characters")
        if self.job_type == "__unknown__":
            # the metrics' label for job types without a handler (jobrunner.metrics)
            raise ValueError("__unknown__ is reserved: the metrics' label for jobs of unregistered types")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"handler {self.job_type}: timeout must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"handler {self.job_type}: max_concurrency must be at least 1")


def handler(
    job_type: str,
    *,
    payload_model: type[BaseModel] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    startup_check: Callable[[], str | None] | None = None,
    limits: GlobalLimits | None = None,
) -> Callable[[HandlerFunc], Handler]:
    """Declare a handler:

    @handler("send_email", payload_model=Email, timeout=30)
    async def send_email(ctx: JobContext[Email]) -> None: ...
    """

    def wrap(func: HandlerFunc) -> Handler:
        return Handler(job_type, func, payload_model, retry, timeout, max_concurrency, startup_check, limits)

    return wrap
