"""Before a timed run: write out what the set-up just wrote, for every system the bench drives.

Rows enqueued and a VACUUM leave dirty buffers in the server and dirty pages in the kernel; after
a 1,000,000-row set-up their write-back would go on under the run, where every commit's WAL
flush waits behind it. asyncpg and the standard library only: the peers' scripts
(bench/peers/) import it from their own virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import asyncpg


async def settle_writes(conn: asyncpg.Connection) -> None:
    """A CHECKPOINT (skipped where this role may not run one), then the kernel's dirty pages
    (os.sync, where the platform has it: a server on this machine writes through them)."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")
    sync = getattr(os, "sync", None)
    if sync is not None:
        await asyncio.to_thread(sync)
