"""The in-flight registry: where each held job is (waiting, running, settling), what frees room
for the fetcher, when a lease may have lapsed, and which stop reason decides an outcome. Pure
bookkeeping, driven by a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from jobrunner.daemon.in_flight import InFlight, StopReason
from jobrunner.job import Job
from tests.support import FakeClock


def job(
    job_id: int, job_type: str = "t", attempt: int = 1, *, priority: int = 0, scheduled_at: datetime | None = None
) -> Job:
    now = datetime.now(UTC)
    return Job(job_id, job_type, "default", "{}", priority, attempt, 3, now, scheduled_at or now, None)


async def forever() -> None:
    await asyncio.Event().wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def registry(clock: FakeClock, concurrency: int = 1) -> InFlight:
    return InFlight(concurrency, 5.0, max_left_behind=2, clock=clock)


async def test_a_job_moves_forward_and_each_step_that_frees_room_says_so(clock: FakeClock) -> None:
    in_flight = registry(clock)
    first, second = in_flight.hold(job(1), clock.now), in_flight.hold(job(2), clock.now)
    in_flight.wait(first)
    in_flight.wait(second)
    assert (in_flight.held, in_flight.waiting, in_flight.running) == (2, 2, 0)
    assert in_flight.next_waiting() is first  # claim order
    task = asyncio.create_task(forever())
    in_flight.start(first, task)
    assert not in_flight.has_free_slot
    assert sorted(in_flight.cancellable()) == [1, 2]
    in_flight.freed.clear()
    assert in_flight.finished(first)
    assert in_flight.freed.is_set() and in_flight.finished_total == 1
    assert not in_flight.finished(first)  # once only
    assert in_flight.attempts() == {1: 1, 2: 1}  # settling jobs are still heartbeated
    in_flight.freed.clear()
    in_flight.let_go(1, 1)
    assert in_flight.freed.is_set()
    assert in_flight.get(1) is None and in_flight.held == 1
    task.cancel()


def test_the_waiting_line_starts_jobs_in_the_claims_order_not_the_order_they_were_claimed_in(
    clock: FakeClock,
) -> None:
    # a rescued job keeps its original scheduled_at: claimed after younger jobs that wait for a
    # slot here, it must not queue behind them (the wait after a worker's death is bounded by
    # the lease and the rescue interval, not by this daemon's waiting line)
    in_flight = registry(clock)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    young = [in_flight.hold(job(i, scheduled_at=base + timedelta(seconds=i)), clock.now) for i in (10, 11, 12)]
    rescued = in_flight.hold(job(1, attempt=2, scheduled_at=base), clock.now)
    urgent = in_flight.hold(job(20, priority=5, scheduled_at=base + timedelta(seconds=20)), clock.now)
    for held in [*young, rescued, urgent]:
        in_flight.wait(held)
    # taken out of the line another way (a cancel request) before its turn: never started
    assert in_flight.take_waiting(11) is young[1]
    order = [in_flight.next_waiting() for _ in range(4)]
    assert order == [urgent, rescued, young[0], young[2]]
    assert in_flight.next_waiting() is None and in_flight.waiting == 0


def test_a_job_waiting_again_for_a_new_attempt_is_started_once(clock: FakeClock) -> None:
    in_flight = registry(clock)
    first = in_flight.hold(job(5), clock.now)
    in_flight.wait(first)
    assert in_flight.take_waiting(5) is first
    in_flight.let_go(5, 1)
    again = in_flight.hold(job(5, attempt=2), clock.now)
    in_flight.wait(again)
    assert in_flight.next_waiting() is again
    assert in_flight.next_waiting() is None


async def test_letting_go_of_an_earlier_attempt_keeps_the_new_hold(clock: FakeClock) -> None:
    in_flight = registry(clock)
    in_flight.hold(job(7, attempt=2), clock.now)
    in_flight.let_go(7, 1)  # the late outcome of the attempt before
    held = in_flight.get(7)
    assert held is not None and held.job.attempt == 2


async def test_jobs_that_waited_too_long_come_out_of_the_line_in_claim_order(clock: FakeClock) -> None:
    in_flight = registry(clock)
    early = in_flight.hold(job(1), clock.now)
    in_flight.wait(early)
    clock.now += 3
    late = in_flight.hold(job(2), clock.now)
    in_flight.wait(late)
    clock.now += 2
    assert in_flight.take_waited_longer_than(5.0) == [early]
    assert in_flight.waiting_jobs() == [late.job]
    assert in_flight.get(1) is early  # still held until its hand-back is written


async def test_a_lease_may_have_lapsed_once_a_lease_passed_since_the_claim_or_the_last_renewal(
    clock: FakeClock,
) -> None:
    in_flight = registry(clock)  # lease_seconds 5
    claimed_at = clock.now
    clock.now += 4.9
    assert not in_flight.lease_may_have_lapsed(claimed_at)
    clock.now += 0.1
    assert in_flight.lease_may_have_lapsed(claimed_at)
    in_flight.leases_renewed(claimed_at + 3)  # a heartbeat sent 3 s after the claim went through
    assert not in_flight.lease_may_have_lapsed(claimed_at)
    clock.now = claimed_at + 8
    assert in_flight.lease_may_have_lapsed(claimed_at)


async def test_handlers_left_behind_count_for_their_type_until_they_end(clock: FakeClock) -> None:
    in_flight = registry(clock, concurrency=3)
    tasks = []
    for job_id in (1, 2):
        held = in_flight.hold(job(job_id, "slow"), clock.now)
        tasks.append(asyncio.create_task(forever()))
        in_flight.start(held, tasks[-1])
        assert in_flight.leave_behind(held)
        in_flight.let_go(job_id, 1)  # its outcome was written without it
    assert in_flight.left_behind == 2 and in_flight.too_many_left_behind
    assert in_flight.by_type() == {"slow": 2}
    assert in_flight.running == 0 and in_flight.has_free_slot
    in_flight.handler_ended(tasks[0])
    assert in_flight.left_behind == 1 and not in_flight.too_many_left_behind
    for task in tasks:
        task.cancel()


@pytest.mark.parametrize(
    ("current", "coming", "replaces"),
    [
        (None, StopReason.SHUTDOWN, True),
        (StopReason.TIMEOUT, StopReason.SHUTDOWN, False),  # a hung handler still spends its attempt
        (StopReason.TIMEOUT, StopReason.CANCEL_REQUESTED, True),  # asked to end: it ends cancelled
        (StopReason.SHUTDOWN, StopReason.CANCEL_REQUESTED, False),
        (StopReason.SHUTDOWN, StopReason.TIMEOUT, False),
        (StopReason.CANCEL_REQUESTED, StopReason.LEASE_LOST, True),  # no longer ours to write
        (StopReason.TIMEOUT, StopReason.LEASE_LOST, True),
        (StopReason.LEASE_LOST, StopReason.LEASE_LOST, False),
        (StopReason.LEASE_LOST, StopReason.CANCEL_REQUESTED, False),
    ],
)
def test_which_stop_reason_decides_the_outcome(current: StopReason | None, coming: StopReason, replaces: bool) -> None:
    assert coming.replaces(current) is replaces
