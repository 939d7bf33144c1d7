"""Exceptions a handler raises to steer what happens to its job."""

from __future__ import annotations


class JobError(Exception):
    """Base of jobrunner's handler-facing exceptions."""


class PermanentError(JobError):
    """The job can never succeed (invalid payload, resource gone): fail it now, no retry."""


class RetryLater(JobError):
    """Try again after `seconds` (e.g. an upstream's Retry-After), still counting the attempt."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if seconds < 0:
            raise ValueError("RetryLater needs a delay of 0 seconds or more")
        self.seconds = seconds
        self.reason = reason
        super().__init__(reason or f"retry requested in {seconds:g}s")

    def __reduce__(self) -> tuple[type[RetryLater], tuple[float, str]]:
        # raised in a worker process (@blocking_handler(runs_in="process")), it comes back pickled
        return (type(self), (self.seconds, self.reason))


class UpstreamRateLimited(RetryLater):
    """The upstream said "slow down" (e.g. HTTP 429 with Retry-After): retry this job after
    `seconds` and pause its whole job type, on every replica, for as long."""


class Snooze(JobError):
    """Run this job again after `seconds` without spending an attempt: for a handler that waits
    on something outside (an external job to finish, a webhook to arrive) rather than failing.
    Unlike RetryLater, the attempt is given back and the job's `snoozes` counted instead; past
    its handler's max_snoozes a snooze is a failed attempt."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if not seconds >= 0:  # also refuses NaN
            raise ValueError("Snooze needs a delay of 0 seconds or more")
        self.seconds = seconds
        self.reason = reason
        super().__init__(reason or f"snoozed for {seconds:g}s")

    def __reduce__(self) -> tuple[type[Snooze], tuple[float, str]]:
        return (type(self), (self.seconds, self.reason))
