"""Cancel requests on a fake clock, against the real table: every held job is checked every poll
interval, a hint gets its job checked sooner but never sooner than min_interval after the last
check, and only what the table confirms is cancelled."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from jobrunner import AsyncClient, NewJob
from jobrunner.daemon.cancel_requests import CancelRequests
from jobrunner.store import JobStore
from tests.support import FakeClock

POLL = 30.0
GAP = 0.5


async def test_polls_every_held_job_and_checks_a_hinted_one_sooner_but_spaced(conn: asyncpg.Connection) -> None:
    asked, hinted, unasked = await AsyncClient(conn).enqueue_many([NewJob("t"), NewJob("t"), NewJob("t")])
    await conn.execute("UPDATE background_jobs SET status = 'running', attempts = 1, lease_expires_at = 'infinity'")
    await conn.execute("UPDATE background_jobs SET cancel_requested_at = now() WHERE id = ANY($1)", [asked, hinted])
    held = [asked, hinted, unasked]
    clock = FakeClock()
    started = clock.now
    cancelled: list[tuple[float, int]] = []
    checked: list[tuple[float, list[int]]] = []

    class Store(JobStore):
        async def cancel_requested(self, job_ids: list[int]) -> set[int]:  # type: ignore[override]
            checked.append((clock.now - started, sorted(job_ids)))
            return await super().cancel_requested(job_ids)

    def cancel(job_id: int) -> None:
        cancelled.append((clock.now - started, job_id))
        if len(cancelled) == 1:
            requests.hint(hinted)  # hinted again right after its check: waits for the gap
        if len(checked) == 3:
            requests.stop()

    requests = CancelRequests(
        Store(conn, "public"),  # type: ignore[arg-type]
        lambda: held,
        held.__contains__,
        cancel,
        poll_interval=POLL,
        min_interval=GAP,
        log=structlog.get_logger(),
        clock=clock,
    )
    requests.hint(10**12)  # not held here: ignored, no query
    requests.hint(hinted)
    await asyncio.wait_for(requests.run(), 10)
    assert checked == [(0.0, [hinted]), (GAP, [hinted]), (POLL, [asked, hinted, unasked])]
    assert sorted(cancelled) == [(0.0, hinted), (GAP, hinted), (POLL, asked), (POLL, hinted)]


async def test_without_hints_the_first_poll_comes_one_interval_after_the_start(conn: asyncpg.Connection) -> None:
    [asked] = await AsyncClient(conn).enqueue_many([NewJob("t")])
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, lease_expires_at = 'infinity',"
        " cancel_requested_at = now()"
    )
    clock = FakeClock()
    started = clock.now
    cancelled: list[float] = []

    def cancel(job_id: int) -> None:
        cancelled.append(clock.now - started)
        requests.stop()

    requests = CancelRequests(
        JobStore(conn, "public"),  # type: ignore[arg-type]
        lambda: [asked],
        lambda job_id: job_id == asked,
        cancel,
        poll_interval=POLL,
        min_interval=GAP,
        log=structlog.get_logger(),
        clock=clock,
    )
    await asyncio.wait_for(requests.run(), 10)
    assert cancelled == [POLL]
