"""Spacing of the claims that wake-up notifications set off.

A NOTIFY on `jobrunner_<schema>` only says "look now": any role that can log in can send one,
so it must not be able to make the fetcher claim in a tight loop. A claim that finds jobs, and the
first claim after it that finds nothing (the NOTIFY of jobs an earlier claim already took), are
never delayed: real jobs start at once. From the second empty claim in a row that notifications
triggered, the next one waits until `min_interval` after the last, so a flood costs at most one
claim per interval. Polling goes on underneath, unaffected.
"""

from __future__ import annotations


class WakeupSpacing:
    __slots__ = ("_empty_in_a_row", "_last_empty", "_min_interval")

    def __init__(self, min_interval: float) -> None:
        self._min_interval = min_interval
        self._empty_in_a_row = 0
        self._last_empty = 0.0

    def claimed(self, found_jobs: bool, notified: bool, now: float) -> None:
        """A claim ended: `notified` when a wake-up notification (not a poll or a free slot) set it off."""
        if found_jobs:
            self._empty_in_a_row = 0
        elif notified:
            self._empty_in_a_row += 1
            self._last_empty = now

    def delay(self, now: float) -> float:
        """How long a claim a notification asks for now must wait."""
        if self._empty_in_a_row < 2:
            return 0.0
        return max(0.0, self._last_empty + self._min_interval - now)
