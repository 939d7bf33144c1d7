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


class UpstreamRateLimited(RetryLater):
    """The upstream said "slow down" (e.g. HTTP 429 with Retry-After): retry this job after
    `seconds` and pause its whole job type, on every replica, for as long."""
