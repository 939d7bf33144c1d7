"""A leader lease: one replica at a time holds `name` (a row in jobrunner_leaders, so it holds
behind a transaction pooler too, where a session's advisory lock would not).

The holder renews it by acquiring it again before it runs out; another replica takes it over
once it has. Used by the services that must run on one replica at a time (the queue-depth
sampler, the vacuumer).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from jobrunner.store import JobStore


class Leadership:
    def __init__(self, store: JobStore, name: str, holder: str, log: structlog.typing.FilteringBoundLogger) -> None:
        self.name = name
        self._store = store
        self._holder = holder
        self._log = log
        self.leading = False

    async def acquire(self, ttl: float) -> bool:
        """Take or renew the lease for `ttl` seconds; returns whether we hold it."""
        leading = await self._store.acquire_leadership(self.name, self._holder, ttl)
        if leading != self.leading:
            self._log.info("leadership changed", leadership=self.name, leading=leading)
        self.leading = leading
        return leading

    def lost(self) -> None:
        """A renewal failed: act as a follower until one goes through (another replica may
        take over once the lease runs out)."""
        self.leading = False

    async def release(self) -> None:
        """Let go of the lease now, so another replica need not wait for it to run out."""
        self.leading = False
        await self._store.release_leadership(self.name, self._holder)

    async def release_quietly(self) -> None:
        """At stop: release if held, whatever happens (the lease runs out on its own anyway)."""
        if self.leading:
            with contextlib.suppress(Exception):
                # shielded: the daemon cancels its services when it stops
                await asyncio.shield(self.release())
