"""How an attempt ended: one small value per kind.

Each kind is written one way by `record_outcomes` (store.py maps it to its columns) and counted
under its own `name` in the daemon's stats and the `outcome` label of the metrics:

| kind         | the row becomes                                                 | name        |
|--------------|-----------------------------------------------------------------|-------------|
| `Completed`  | completed (with the handler's result, if any)                   | `completed` |
| `RetryAfter` | pending again `delay` seconds after the write                   | `retried`   |
| `Failed`     | failed: no retry (bad input, PermanentError)                    | `failed`    |
| `Dead`       | dead: the last attempt failed                                   | `dead`      |
| `Cancelled`  | cancelled: someone asked, the handler was stopped               | `cancelled` |
| `Released`   | pending at its old place, attempt given back (handed back       | `released`  |
|              | unstarted or unfinished; cancelled if a cancel came meanwhile)  |             |
| `Snoozed`    | pending again `delay` seconds after the write, attempt given    | `snoozed`   |
|              | back, `snoozes` + 1 (cancelled if a cancel came meanwhile)      |             |

An attempt whose lease was lost has no outcome: the job is someone else's, nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from jobrunner.job import Job


@dataclass(slots=True)
class Outcome:
    """Which attempt ended (the write is fenced on id and attempt); the kinds say how."""

    name: ClassVar[str]

    job_id: int
    attempt: int
    job_type: str
    queue: str
    # handler run time; None when the handler never ran (unknown type, bad payload, handed back)
    duration: float | None = field(default=None, kw_only=True)

    def stand_in(self, note: str) -> Outcome:
        """The same ending without the texts the database refused to store, saying so in `note`."""
        return self


@dataclass(slots=True)
class Completed(Outcome):
    name = "completed"

    result_json: str | None = None
    # set only when the result could not be stored: why, kept in last_error
    note: str | None = None

    @property
    def is_plain(self) -> bool:
        """Nothing to store but the status: written by record_outcomes' short path."""
        return self.result_json is None and self.note is None

    def stand_in(self, note: str) -> Outcome:
        return Completed(self.job_id, self.attempt, self.job_type, self.queue, note=note, duration=self.duration)


@dataclass(slots=True)
class RetryAfter(Outcome):
    """Runnable again `delay` seconds after the outcome is written (the database's clock)."""

    name = "retried"

    delay: float
    error: str
    traceback: str | None = None

    def stand_in(self, note: str) -> Outcome:
        return RetryAfter(
            self.job_id, self.attempt, self.job_type, self.queue, self.delay, note, duration=self.duration
        )


@dataclass(slots=True)
class Failed(Outcome):
    name = "failed"

    error: str
    traceback: str | None = None

    def stand_in(self, note: str) -> Outcome:
        return Failed(self.job_id, self.attempt, self.job_type, self.queue, note, duration=self.duration)


@dataclass(slots=True)
class Dead(Outcome):
    name = "dead"

    error: str
    traceback: str | None = None

    def stand_in(self, note: str) -> Outcome:
        return Dead(self.job_id, self.attempt, self.job_type, self.queue, note, duration=self.duration)


@dataclass(slots=True)
class Cancelled(Outcome):
    name = "cancelled"

    # what last_error says
    reason: ClassVar[str] = "cancelled by request"

    @classmethod
    def of(cls, job: Job) -> Cancelled:
        return cls(job.id, job.attempt, job.job_type, job.queue)


@dataclass(slots=True)
class Released(Outcome):
    name = "released"

    @classmethod
    def of(cls, job: Job) -> Released:
        return cls(job.id, job.attempt, job.job_type, job.queue)


@dataclass(slots=True)
class Snoozed(Outcome):
    """The handler raised Snooze: runnable again `delay` seconds after the write, its attempt not
    spent. `reason` is logged, not stored (last_error keeps the job's last real error)."""

    name = "snoozed"

    delay: float
    reason: str = ""
