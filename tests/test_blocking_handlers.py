"""Handlers for blocking work: @blocking_handler and ctx.run_in_thread/run_in_process run off the
event loop in bounded pools, so /healthz and heartbeats go on while they block; a timeout settles
the job at once while its thread runs on, its result discarded.

In-process daemons for the semantics; real `jobrunner run` processes for /healthz under load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pickle
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from jobrunner import BlockingContext, JobContext, RetryPolicy, blocking_handler, handler
from jobrunner.blocking import BlockingCallCancelled, cancelled, raise_if_cancelled
from jobrunner.job import Job
from tests import test_processes
from tests.support import job_row, running_daemon, wait_for, wait_until
from tests.test_processes import Children, daemon_env, insert_job

children = test_processes.children

RUN = ("run", "--handlers", "tests.blocking_process_handlers")
STATUS = "SELECT status FROM background_jobs WHERE id = $1"

# a blocking call in these tests waits for the test to let it go
let_go = threading.Event()
saw_cancel = threading.Event()


@pytest.fixture(autouse=True)
def _let_blocked_threads_go() -> Any:
    let_go.clear()
    saw_cancel.clear()
    yield
    let_go.set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@blocking_handler("thread_echo")
def thread_echo(ctx: BlockingContext[dict[str, Any]]) -> dict[str, Any]:
    return {"thread": threading.current_thread().name, "attempt": ctx.attempt, "value": ctx.payload["value"]}


@blocking_handler("thread_stuck", timeout=0.3)
def thread_stuck(_ctx: BlockingContext[dict[str, Any]]) -> str:
    """Ignores its timeout until the test lets it go; notes that it was told it is cancelled."""
    while not let_go.wait(0.01):
        if cancelled():
            saw_cancel.set()
    return "too late"


@blocking_handler("thread_cooperative", timeout=0.3)
def thread_cooperative(_ctx: BlockingContext[dict[str, Any]]) -> None:
    while True:
        raise_if_cancelled()
        time.sleep(0.01)


@handler("hybrid")
async def hybrid(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    """An async handler that sends only its blocking part to a pool thread."""
    name = await ctx.run_in_thread(lambda: threading.current_thread().name)
    return {"thread": name, "loop_thread": threading.current_thread().name}


async def test_a_blocking_handler_runs_in_a_pool_thread(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(conn, "thread_echo", {"value": 42})
    hybrid_id = await insert_job(conn, "hybrid")
    async with running_daemon(db_url, [thread_echo, hybrid]):
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=2)
    result = json.loads((await job_row(conn, job_id))["result"])
    assert result["thread"].startswith("jobrunner-blocking-")
    assert result == {"thread": result["thread"], "attempt": 1, "value": 42}
    mixed = json.loads((await job_row(conn, hybrid_id))["result"])
    assert mixed["thread"].startswith("jobrunner-blocking-")
    assert mixed["loop_thread"] == threading.current_thread().name


async def test_a_timeout_settles_the_job_while_its_thread_runs_on(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(conn, "thread_stuck", max_attempts=1)
    async with running_daemon(db_url, [thread_stuck], blocking_threads=1) as daemon:
        # settled at the timeout, not when the thread ends
        await wait_for(conn, STATUS, job_id, expect="dead")
        row = await job_row(conn, job_id)
        assert "timed out after 0.3s" in row["last_error"]
        assert await asyncio.to_thread(saw_cancel.wait, 10), "the thread was never told its job stopped waiting"
        assert daemon.executor is not None
        pools = daemon.executor.blocking
        assert pools.abandoned == 1
        let_go.set()
        await wait_until(lambda: pools.abandoned == 0, what="the abandoned call to end")
    row = await job_row(conn, job_id)
    assert row["status"] == "dead"
    assert row["result"] is None  # its late "too late" was discarded


async def test_a_stuck_thread_holds_its_place_in_the_bound(db_url: str, conn: asyncpg.Connection) -> None:
    """One thread, stuck past its job's timeout: the next blocking job waits for that thread (the
    pool never grows past blocking_threads), then runs once it is free."""
    stuck = await insert_job(conn, "thread_stuck", max_attempts=1)
    async with running_daemon(db_url, [thread_stuck, thread_echo], blocking_threads=1) as daemon:
        await wait_for(conn, STATUS, stuck, expect="dead")
        waiting = await insert_job(conn, "thread_echo", {"value": 1})
        await wait_for(conn, STATUS, waiting, expect="running")
        assert daemon.executor is not None
        assert daemon.executor.blocking.abandoned == 1
        assert (await job_row(conn, waiting))["status"] == "running"  # queued behind the stuck thread
        let_go.set()
        await wait_for(conn, STATUS, waiting, expect="completed")
    result = json.loads((await job_row(conn, waiting))["result"])
    assert result["thread"] == "jobrunner-blocking-0"


async def test_a_cooperative_call_stops_when_its_job_stops_waiting(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(conn, "thread_cooperative", max_attempts=1)
    async with running_daemon(db_url, [thread_cooperative]) as daemon:
        await wait_for(conn, STATUS, job_id, expect="dead")
        assert daemon.executor is not None
        pools = daemon.executor.blocking
        await wait_until(lambda: pools.abandoned == 0, what="the cooperative call to stop")


async def test_shutdown_does_not_wait_for_a_stuck_thread(db_url: str, conn: asyncpg.Connection) -> None:
    """The shutdown grace ends: the job is handed back (its attempt not spent) and the daemon
    stops although the thread still runs."""
    job_id = await insert_job(conn, "thread_stuck")
    started = time.monotonic()
    no_timeout = dataclasses.replace(thread_stuck, timeout=None)
    async with running_daemon(db_url, [no_timeout], shutdown_grace=0.2, cancel_grace=0.2):
        await wait_for(conn, STATUS, job_id, expect="running")
    assert time.monotonic() - started < 10
    row = await job_row(conn, job_id)
    assert row["status"] == "pending"
    assert row["attempts"] == 0


async def test_a_process_handler_runs_in_another_process(db_url: str, conn: asyncpg.Connection) -> None:
    from tests.blocking_process_handlers import spin_in_process

    job_id = await insert_job(conn, "spin_in_process", {"seconds": 0.05})
    async with running_daemon(db_url, [spin_in_process], blocking_processes=1):
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=60)
    result = json.loads((await job_row(conn, job_id))["result"])
    assert result["pid"] != os.getpid()
    assert result["loops"] > 0


async def test_a_worker_process_that_dies_fails_its_job_and_the_pool_starts_again(
    db_url: str, conn: asyncpg.Connection
) -> None:
    from tests.blocking_process_handlers import die_in_process

    job_id = await insert_job(conn, "die_in_process")
    quick = dataclasses.replace(die_in_process, retry=RetryPolicy(base_delay=0.01, max_delay=0.01))
    async with running_daemon(db_url, [quick], blocking_processes=1):
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=60)
    row = await job_row(conn, job_id)
    assert row["attempts"] == 2
    assert "BrokenProcessPool" in row["last_error"]
    assert json.loads(row["result"]) != os.getpid()


def test_a_blocking_context_crosses_to_a_process_by_pickling() -> None:
    now = datetime.now(UTC)
    job = Job(1, "t", "default", "{}", 0, 1, 5, now, now, None)
    context = BlockingContext(job, {"a": 1})
    assert pickle.loads(pickle.dumps(context)) == context


def test_what_a_blocking_handler_may_be() -> None:
    with pytest.raises(ValueError, match="plain function"):

        @blocking_handler("async_one")
        async def async_one(_ctx: BlockingContext[Any]) -> None: ...

    with pytest.raises(ValueError, match="module-level"):

        @blocking_handler("local_one", runs_in="process")
        def local_one(_ctx: BlockingContext[Any]) -> None: ...

    with pytest.raises(ValueError, match="runs_in"):
        blocking_handler("nowhere", runs_in="elsewhere")  # type: ignore[arg-type]


def test_raise_if_cancelled_is_quiet_outside_a_pool_thread() -> None:
    assert not cancelled()
    raise_if_cancelled()
    assert issubclass(BlockingCallCancelled, Exception)


# -- real daemons: /healthz answers while every slot runs blocking work ------------------------

# the longest /healthz may take to answer while four handlers block; a blocked event loop
# answers only when a handler ends (seconds)
HEALTHZ_BOUND = 1.0


@pytest.mark.parametrize(
    ("job_type", "payload"),
    [("sleep_in_thread", {"seconds": 3}), ("spin_in_process", {"seconds": 3})],
)
async def test_healthz_answers_while_four_blocking_handlers_run(
    db_url: str, conn: asyncpg.Connection, children: Children, job_type: str, payload: dict[str, Any]
) -> None:
    port = _free_port()
    env = daemon_env(http_port=port, concurrency=4, blocking_threads=4, blocking_processes=4)
    daemon = children.start(db_url, *RUN, env=env)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def healthz() -> float:
            started = time.perf_counter()
            response = await http.get("/healthz", timeout=30)
            assert response.status_code == 200, response.text
            return time.perf_counter() - started

        async def answers() -> bool:
            try:
                await healthz()
            except httpx.TransportError:
                return False
            return True

        deadline = time.monotonic() + 60
        while not await answers():
            assert daemon.proc.poll() is None and time.monotonic() < deadline, "the daemon did not come up"
            await asyncio.sleep(0.05)
        ids = [await insert_job(conn, job_type, payload) for _ in range(4)]
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=4, timeout=60)
        answered_in: list[float] = []
        while await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'running'") == 4:
            answered_in.append(await healthz())
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=4, timeout=60)
    assert max(answered_in) < HEALTHZ_BOUND, f"/healthz took up to {max(answered_in):.3f}s"
    assert len(answered_in) >= 5, f"only {len(answered_in)} probes while the four jobs ran"
    if job_type == "spin_in_process":
        pids = {json.loads((await job_row(conn, job_id))["result"])["pid"] for job_id in ids}
        assert daemon.pid not in pids


async def test_the_worker_processes_end_when_their_daemon_is_killed(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    # a SIGKILLed daemon cannot stop its pool: its workers must notice and exit on their own,
    # a running call included, instead of waiting for calls forever
    import psutil

    env = daemon_env(concurrency=2, blocking_processes=2)
    daemon = children.start(db_url, *RUN, env=env)
    for _ in range(2):
        await insert_job(conn, "spin_in_process", {"seconds": 120})
    await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=2, timeout=60)

    def pool_workers() -> list[psutil.Process]:
        return [p for p in psutil.Process(daemon.pid).children() if "spawn_main" in " ".join(p.cmdline())]

    await wait_until(lambda: len(pool_workers()) == 2, timeout=60, what="two worker processes")
    workers = pool_workers()
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.proc.wait(timeout=10)

    def ended(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await wait_until(lambda: all(ended(p) for p in workers), timeout=15, what="the orphaned workers to exit")


def test_the_handler_options_are_defined_once() -> None:
    # HandlerOptions types the keywords of both decorators; Handler's fields hold their defaults
    from jobrunner.handler import Handler, HandlerOptions

    names = [f.name for f in dataclasses.fields(Handler)]
    assert names[2 : 2 + len(HandlerOptions.__annotations__)] == list(HandlerOptions.__annotations__)
    options: HandlerOptions = {"timeout": 5.0, "max_concurrency": 2, "max_snoozes": 3}

    async def run(ctx: JobContext[Any]) -> None: ...

    def work(ctx: BlockingContext[Any]) -> None: ...

    on_loop, in_thread = handler("on_loop", **options)(run), blocking_handler("in_thread", **options)(work)
    for declared in (on_loop, in_thread):
        assert (declared.timeout, declared.max_concurrency, declared.max_snoozes) == (5.0, 2, 3)
    assert (on_loop.runs_in, in_thread.runs_in) == ("event_loop", "thread")
