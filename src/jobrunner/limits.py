"""Global limits of a job type or of a queue, enforced in the database across every replica."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _RunningAndRate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_running: int | None = Field(default=None, ge=1, description="Running at once, all replicas together.")
    rate: int | None = Field(default=None, ge=1, description="Starts allowed per `per_seconds` (token bucket).")
    per_seconds: float = Field(default=60.0, gt=0)


class GlobalLimits(_RunningAndRate):
    """A job type's limits, declared on its handler (`@handler(..., limits=GlobalLimits(...))`)
    or in settings (`JOBRUNNER_LIMITS='{"analyze_image": {"rate": 100, "per_seconds": 60}}'`,
    which wins)."""

    per_key_max_running: int | None = Field(
        default=None, ge=1, description="Running at once per concurrency_key (e.g. per user)."
    )

    @model_validator(mode="after")
    def _something_limited(self) -> GlobalLimits:
        if self.max_running is None and self.rate is None and self.per_key_max_running is None:
            raise ValueError("set at least one of max_running, rate, per_key_max_running")
        return self


class QueueLimits(_RunningAndRate):
    """A queue's limits, over every job type in it, set in settings
    (`JOBRUNNER_QUEUE_LIMITS='{"ai": {"max_running": 20, "rate": 100, "per_seconds": 60}}'`)."""

    @model_validator(mode="after")
    def _something_limited(self) -> QueueLimits:
        if self.max_running is None and self.rate is None:
            raise ValueError("set at least one of max_running, rate")
        return self
