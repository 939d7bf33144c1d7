"""Backoff between attempts: exponential, capped, with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """delay = uniform(0, min(max_delay, base_delay * factor ** (attempt - 1))).

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the retries
    of jobs that failed together, so a recovering upstream is not hit by them all at once.
    """

    base_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("RetryPolicy needs base_delay >= 0, max_delay >= 0 and factor >= 1")

    def ceiling_for(self, attempt: int) -> float:
        """The largest delay after failed attempt number `attempt` (1-based)."""
        exponent = max(0, attempt - 1)
        # float overflow guard: past ~1000 doublings the cap has long been reached
        if exponent > 1000:
            return self.max_delay
        return float(min(self.max_delay, self.base_delay * self.factor**exponent))

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling_for(attempt)
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0, ceiling)


DEFAULT_RETRY_POLICY = RetryPolicy()
