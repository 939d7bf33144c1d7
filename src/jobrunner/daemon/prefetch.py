"""How many jobs the fetch loop claims ahead of free slots (JOBRUNNER_PREFETCH).

Without claiming ahead, a process with short jobs alternates: it waits for a claim while its
slots are idle, then runs the batch while the database is idle. Jobs claimed ahead wait in the
process for a slot, so the next claim's round trip overlaps the work.

`auto` claims ahead as many jobs as the process finishes in about four claim round trips (both
measured as it goes), so a job waits locally a few claims' time: a hundred no-op jobs, none for
jobs that run for seconds. A job that waited `ttl` for a slot all the same (the
mix turned slow) is handed back by the daemon for any replica to take, and then nothing is
claimed ahead for another `ttl`, so the same job cannot bounce between the table and the process.
"""

from __future__ import annotations

from typing import Literal

# weight of the newest measurement in the moving averages: a few claims to follow a change
SMOOTHING = 0.3
# round trips of work claimed ahead: the fetch loop refills once half of it has started, so
# half must still cover one round trip and its jitter
ROUND_TRIPS_AHEAD = 4.0
# a longer gap since the last claim means the process waited (idle, or its slots held longer
# jobs): the finish rate since then, not the average of the busy claims before, sizes the next
QUIET_GAP = 0.1


class PrefetchDepth:
    def __init__(self, setting: int | Literal["auto"], *, concurrency: int, batch_size: int, ttl: float) -> None:
        self.fixed = None if setting == "auto" else setting
        # auto never holds more waiting jobs than it could claim in one batch or run at once
        self.ceiling = max(concurrency, batch_size)
        self.ttl = ttl
        self._finish_rate = 0.0  # jobs finished per second
        self._round_trip = 0.0  # seconds per claim
        self._finished_since_claim = 0
        self._last_claim_end: float | None = None
        self._quiet_until = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.fixed != 0

    def depth(self, now: float) -> int:
        """Jobs that may wait for a slot now."""
        if now < self._quiet_until:
            return 0
        if self.fixed is not None:
            return self.fixed
        rate = self._finish_rate
        if self._last_claim_end is not None and now - self._last_claim_end > QUIET_GAP:
            rate = min(rate, self._finished_since_claim / (now - self._last_claim_end))
        return min(self.ceiling, round(ROUND_TRIPS_AHEAD * rate * self._round_trip))

    def finished(self, count: int = 1) -> None:
        """`count` jobs' handlers returned (their slots are free)."""
        self._finished_since_claim += count

    def claimed(self, started: float, ended: float) -> None:
        """A claim's round trip, from sending it to having its jobs."""
        round_trip = ended - started
        if self._last_claim_end is None:
            self._round_trip = round_trip
        else:
            self._round_trip += SMOOTHING * (round_trip - self._round_trip)
            if ended > self._last_claim_end:
                rate = self._finished_since_claim / (ended - self._last_claim_end)
                self._finish_rate += SMOOTHING * (rate - self._finish_rate)
        self._last_claim_end = ended
        self._finished_since_claim = 0

    def handed_back(self, now: float) -> None:
        """Jobs waited `ttl` for a slot: claim only for free slots for a while, and measure afresh."""
        self._quiet_until = now + self.ttl
        self._finish_rate = 0.0
