"""LISTEN on a dedicated connection and wake the fetcher when jobs are inserted.

Polling always runs underneath: while this connection is down (or LISTEN is impossible behind
a transaction pooler) jobs are still found, only later.

Any role that can log in can NOTIFY on any channel, so nothing heard here is trusted: a wake-up
makes the fetcher claim (spaced, see wakeups.py), a cancel notification makes the daemon ask the
table whether the job was really flagged (see cancel_requests.py). Neither acts on its payload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from jobrunner.daemon.backoff import Backoff
from jobrunner.daemon.cancel_requests import job_id_from_payload
from jobrunner.daemon.clock import sleep_unless
from jobrunner.database import TRANSIENT_ERRORS, connect_kwargs
from jobrunner.dsn import DatabaseUrl
from jobrunner.settings import Settings


def channel_for(schema: str) -> str:
    return f"jobrunner_{schema}"


def cancel_channel_for(schema: str) -> str:
    return f"jobrunner_cancel_{schema}"


class NotificationListener:
    def __init__(
        self,
        url: DatabaseUrl,
        schema: str,
        queues: list[str],
        wakeup: asyncio.Event,
        stopping: asyncio.Event,
        connect_timeout: float,
        log: structlog.typing.FilteringBoundLogger,
        # told the id a cancel notification names: a hint to check, never a request to obey
        on_cancel_hint: Callable[[int], object] | None = None,
        errors: Counter | None = None,
    ) -> None:
        self._errors = errors
        self._url = url
        self._channel = channel_for(schema)
        self._cancel_channel = cancel_channel_for(schema)
        self._on_cancel_hint = on_cancel_hint
        self._queues = set(queues)
        self._wakeup = wakeup
        self._stopping = stopping
        self._connect_timeout = connect_timeout
        self._log = log
        self.listening = False

    @classmethod
    def for_daemon(
        cls,
        settings: Settings,
        database_url: DatabaseUrl,
        listen_url: DatabaseUrl | None,
        wakeup: asyncio.Event,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
        on_cancel_hint: Callable[[int], object],
        errors: Counter | None,
    ) -> NotificationListener | None:
        """The daemon's listener; None where settings turn LISTEN off, or where the database URL
        is a transaction pooler (LISTEN does not work through one) and no listen URL is set."""
        url = listen_url or (None if database_url.behind_pooler else database_url)
        if settings.listen and url is None:
            log.warning(
                "database_url is a transaction pooler and no listen_database_url is set: polling only",
                poll_interval=settings.poll_interval,
            )
        if not settings.listen or url is None:
            return None
        s = settings
        return cls(
            url, s.schema_name, s.queues, wakeup, stopping, s.connect_timeout, log, on_cancel_hint, errors=errors
        )

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, queue: str) -> None:
        if not queue or queue in self._queues:
            self._wakeup.set()

    def _on_cancel_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._on_cancel_hint is not None and (job_id := job_id_from_payload(payload)) is not None:
            self._on_cancel_hint(job_id)

    async def run(self) -> None:
        backoff = Backoff("listener", self._log, self._errors)
        while not self._stopping.is_set():
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(**connect_kwargs(self._url, self._connect_timeout))
            except TRANSIENT_ERRORS as exc:
                await sleep_unless(self._stopping, backoff.failed("LISTEN connection failed, polling meanwhile", exc))
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._on_notify)
                await conn.add_listener(self._cancel_channel, self._on_cancel_notify)
                backoff.succeeded()
                self.listening = True
                # jobs inserted while we were not listening: look now
                self._wakeup.set()
                self._log.info("listening for new jobs", channel=self._channel)
                await self._wait_until_lost(conn, lost)
            except TRANSIENT_ERRORS as exc:
                self._log.warning("LISTEN connection lost, polling meanwhile", error=repr(exc))
            finally:
                self.listening = False
                await _close_quietly(conn)

    async def _wait_until_lost(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        # asyncpg only notices a dead socket when it reads; a cheap query now and then turns a
        # silently cut connection (no FIN, e.g. a network cut) into an error we can act on.
        # The daemon cancels this task when it stops.
        while not await sleep_unless(lost, 5.0):
            await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
        self._log.warning("LISTEN connection closed by the server, reconnecting")


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except Exception:
        conn.terminate()
