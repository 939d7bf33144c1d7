"""What one daemon process did, counted after the database said so (never before)."""

from __future__ import annotations

from dataclasses import dataclass

from jobrunner.outcomes import Cancelled, Completed, Dead, Failed, Outcome, Released, RetryAfter, Snoozed


@dataclass
class DaemonStats:
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    cancelled: int = 0
    snoozed: int = 0
    # attempts whose lease was lost before their outcome was written
    lost_leases: int = 0

    def count(self, outcome: Outcome) -> None:
        """An outcome written."""
        match outcome:
            case Completed():
                self.completed += 1
            case RetryAfter():
                self.retried += 1
            case Failed():
                self.failed += 1
            case Dead():
                self.dead += 1
            case Cancelled():
                self.cancelled += 1
            case Released():
                self.released += 1
            case Snoozed():
                self.snoozed += 1
