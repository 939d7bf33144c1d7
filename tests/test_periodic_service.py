"""The periodic-service base every recurring task of the daemon runs on: when it runs, what a
failure costs (counted, logged, retried after the backoff but never later than the interval),
wake-ups spaced by min_gap, and stop. Driven by a fake clock: no test here waits for real."""

from __future__ import annotations

import asyncio

import structlog
from structlog.testing import capture_logs

from jobrunner.daemon.backoff import RECONNECT_POLICY
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.metrics import DaemonMetrics
from tests.support import FakeClock


class Scripted(PeriodicService):
    """Fails its first `failures` runs, then stops itself after `runs` runs in all."""

    def __init__(self, clock: FakeClock, metrics: DaemonMetrics, *, failures: int, runs: int, **options: bool) -> None:
        super().__init__(
            "scripted", 5.0, log=structlog.get_logger(), errors=metrics.database_errors, clock=clock, **options
        )
        self.fake = clock
        self.failures_left = failures
        self.runs_left = runs
        self.ran_at: list[float] = []
        self.failed_with: list[Exception] = []
        self.stopped_at: float | None = None

    async def run_once(self) -> None:
        self.ran_at.append(self.fake.now)
        self.runs_left -= 1
        if self.runs_left == 0:
            self.stop()
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionResetError("the database went away")

    def failed(self, exc: Exception) -> None:
        self.failed_with.append(exc)

    async def stopped(self) -> None:
        self.stopped_at = self.fake.now


def errors_counted(metrics: DaemonMetrics, component: str) -> float | None:
    return metrics.registry.get_sample_value("jobrunner_database_errors_total", {"component": component})


async def test_runs_every_interval_and_stops_when_told() -> None:
    clock, metrics = FakeClock(), DaemonMetrics()
    service = Scripted(clock, metrics, failures=0, runs=3)
    await asyncio.wait_for(service.run(), 5)
    assert service.ran_at == [1005.0, 1010.0, 1015.0]  # the first one interval after the start
    assert service.stopped_at == 1015.0
    assert errors_counted(metrics, "scripted") == 0  # the series exists from the start


async def test_run_at_start_runs_at_once() -> None:
    clock, metrics = FakeClock(), DaemonMetrics()
    service = Scripted(clock, metrics, failures=0, runs=2, run_at_start=True)
    await asyncio.wait_for(service.run(), 5)
    assert service.ran_at == [1000.0, 1005.0]


async def test_a_failure_is_counted_logged_and_retried_after_the_backoff_capped_at_the_interval() -> None:
    clock, metrics = FakeClock(), DaemonMetrics()
    service = Scripted(clock, metrics, failures=8, runs=10)
    with capture_logs() as logs:
        await asyncio.wait_for(service.run(), 5)
    waits = [later - earlier for earlier, later in zip(service.ran_at, service.ran_at[1:], strict=False)]
    # after the n-th failure in a row: the reconnect backoff's wait (full jitter), at most the interval
    for failures, wait in enumerate(waits[:8], start=1):
        assert 0 <= wait <= min(5.0, RECONNECT_POLICY.ceiling_for(failures)), (failures, wait)
    assert waits[8] == 5.0  # it worked again: back to the interval
    assert errors_counted(metrics, "scripted") == 8
    assert len(service.failed_with) == 8
    failures_logged = [e for e in logs if e["event"] == "scripted failed, will retry"]
    # the 1st, 2nd, 4th and 8th failure in a row: a long outage is not a line per retry
    assert [e["failures"] for e in failures_logged] == [1, 2, 4, 8]
    assert all(e["log_level"] == "warning" and "went away" in e["error"] for e in failures_logged)
    assert [e["failures"] for e in logs if e["event"] == "scripted works again"] == [8]


async def test_a_wake_up_runs_it_early_but_not_sooner_than_min_gap_after_the_last_run() -> None:
    clock, metrics = FakeClock(), DaemonMetrics()
    service = Scripted(clock, metrics, failures=0, runs=3, min_gap=0.5)
    task = asyncio.create_task(service.run())
    while not service.ran_at:
        await asyncio.sleep(0)
    service.wake()  # right after the first run: waits out the gap
    while len(service.ran_at) < 2:
        await asyncio.sleep(0)
    clock.now += 2.0
    service.wake()  # well after the gap: at once
    await asyncio.wait_for(task, 5)
    assert service.ran_at == [1005.0, 1005.5, 1007.5]


async def test_a_disabled_service_never_runs() -> None:
    class Off(Scripted):
        @property
        def enabled(self) -> bool:
            return False

    service = Off(FakeClock(), DaemonMetrics(), failures=0, runs=1)
    await asyncio.wait_for(service.run(), 5)
    assert service.ran_at == []


async def test_a_bug_is_logged_with_its_traceback_and_not_counted_as_a_database_error() -> None:
    class Buggy(Scripted):
        async def run_once(self) -> None:
            self.ran_at.append(self.fake.now)
            if len(self.ran_at) == 2:
                self.stop()
            if len(self.ran_at) == 1:
                raise KeyError("a bug, not the database")

    clock, metrics = FakeClock(), DaemonMetrics()
    service = Buggy(clock, metrics, failures=0, runs=2)
    with capture_logs() as logs:
        await asyncio.wait_for(service.run(), 5)
    assert len(service.ran_at) == 2  # retried like any failure
    assert errors_counted(metrics, "scripted") == 0
    [failure] = [e for e in logs if e["event"] == "scripted failed, will retry"]
    assert failure["log_level"] == "error" and failure["exc_info"] is True
