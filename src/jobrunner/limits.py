"""Global limits of a job type, enforced in the database across every replica."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GlobalLimits(BaseModel):
    """Declared on a handler (`@handler(..., limits=GlobalLimits(...))`) or in settings
    (`JOBRUNNER_LIMITS='{"analyze_image": {"rate": 100, "per_seconds": 60}}'`, which wins)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_running: int | None = Field(default=None, ge=1, description="Running at once, all replicas together.")
    rate: int | None = Field(default=None, ge=1, description="Starts allowed per `per_seconds` (token bucket).")
    per_seconds: float = Field(default=60.0, gt=0)
    per_key_max_running: int | None = Field(
        default=None, ge=1, description="Running at once per concurrency_key (e.g. per user)."
    )

    @model_validator(mode="after")
    def _something_limited(self) -> GlobalLimits:
        if self.max_running is None and self.rate is None and self.per_key_max_running is None:
            raise ValueError("set at least one of max_running, rate, per_key_max_running")
        return self
