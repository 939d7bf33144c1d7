"""What a claimed job looks like to the daemon and to handlers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """The `status` column. Terminal: completed, failed, dead, cancelled."""

    PENDING = "pending"  # waiting for scheduled_at, or runnable now
    RUNNING = "running"  # claimed; lease_expires_at says until when
    COMPLETED = "completed"
    FAILED = "failed"  # failed permanently: bad payload, unknown type, handler said no retry
    DEAD = "dead"  # failed on its last allowed attempt
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    job_type: str
    queue: str
    payload_json: str
    priority: int
    attempt: int
    max_attempts: int
    created_at: datetime
    scheduled_at: datetime
    dedupe_key: str | None
    # how long it had been runnable when it was claimed (database clock)
    waited_seconds: float = 0.0

    @classmethod
    def from_claim_row(cls, row: Any) -> Job:
        # every claim query returns its columns in the order of these fields (tests/test_claim_rows.py
        # checks all of them): positional is half the cost of eleven lookups by name
        return cls(*row)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts
