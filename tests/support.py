"""Helpers the tests share: database URLs, an in-process daemon, waiting on the database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote as percent_encode
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.daemon import Daemon
from jobrunner.dsn import parse_database_url
from jobrunner.handler import Handler
from jobrunner.registry import HandlerRegistry
from jobrunner.samplers import Sampler
from jobrunner.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def database_url_for(server_url: str, database: str) -> str:
    """The same server (host, port, socket, user), another database."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


def make_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings fast enough for tests: short polls and leases."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "poll_interval": 0.05,
        "lease_seconds": 5.0,
        "rescue_interval": 0.2,
        "shutdown_grace": 5.0,
        "worker_id": "test-worker",
        "http_port": 0,  # a free port: tests run many daemons side by side
        "sample_interval": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_daemon(
    db_url: str,
    handlers: Iterable[Handler],
    *,
    burst: bool = False,
    samplers: Sequence[Sampler] = (),
    **overrides: Any,
) -> AsyncIterator[Daemon]:
    """A real Daemon in this event loop; stopped (and awaited) on exit."""
    settings = make_settings(db_url, **overrides)
    daemon = Daemon(settings, HandlerRegistry(handlers), parse_database_url(db_url), burst=burst, samplers=samplers)
    task = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if task.done():
        task.result()  # raise what stopped it
    try:
        yield daemon
    finally:
        if not burst or task.done():
            daemon.request_stop()
        # a burst daemon stops by itself once nothing is runnable
        await asyncio.wait_for(task, 60)


async def wait_for(conn: asyncpg.Connection, sql: str, *args: Any, expect: Any = True, timeout: float = 20.0) -> Any:
    """Re-run `sql` until it returns `expect` (a condition in the database, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await conn.fetchval(sql, *args)
        if value == expect:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {sql!r} to return {expect!r}; last value {value!r}")
        await asyncio.sleep(0.02)


async def job_row(conn: asyncpg.Connection, job_id: int) -> Mapping[str, Any]:
    row = await conn.fetchrow("SELECT * FROM background_jobs WHERE id = $1", job_id)
    assert row is not None, f"job {job_id} is missing"
    return dict(row)


def jobrunner_process(
    db_url: str, *args: str, env: Mapping[str, str | None] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """`python -m jobrunner ARGS` as a real child process against db_url; a variable given as
    None in `env` is left out of the child's environment."""
    full_env: dict[str, str | None] = {
        **os.environ,
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(REPO_ROOT),
        "JOBRUNNER_LOG_FORMAT": "json",
        "JOBRUNNER_POLL_INTERVAL": "0.05",
        "JOBRUNNER_RESCUE_INTERVAL": "0.2",
        "JOBRUNNER_HTTP_PORT": "0",
        **(env or {}),
    }
    child_env = {name: value for name, value in full_env.items() if value is not None}
    return subprocess.Popen([sys.executable, "-m", "jobrunner", *args], env=child_env, cwd=REPO_ROOT, **popen)


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Re-check an in-process condition (a daemon attribute, a counter) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def url_as(url: str, user: str, password: str | None = None) -> str:
    """The same server and database as another login. Keeps a Unix-socket host (`?host=/dir`,
    the embedded server's form), which has no hostname to rebuild the netloc from."""
    parts = urlsplit(url)
    login = f"{quote_url_part(user)}:{quote_url_part(password)}" if password else quote_url_part(user)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


def url_with_query(url: str, extra: str) -> str:
    """`url` with `extra` (`name=value&...`) appended to whatever query it already has."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def quote_url_part(text: str) -> str:
    return percent_encode(text, safe="")


class FakeClock(Clock):
    """Time moves only when something sleeps on it, by exactly what it sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    async def sleep_unless(self, event: asyncio.Event, seconds: float) -> bool:
        await asyncio.sleep(0)  # whoever else is ready runs first (and may set the event)
        if event.is_set():
            return True
        self.now += seconds
        return False
