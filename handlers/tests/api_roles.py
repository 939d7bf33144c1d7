"""Connections made the way Supabase's API makes them, for calling the app's RPCs as their callers.

PostgREST logs in as its authenticator, a member of `anon`, `authenticated` and `service_role`,
and runs each request as the role the JWT names (`SET ROLE`), with the verified claims in
`request.jwt.claims` (older PostgREST: one setting per claim, `request.jwt.claim.sub`), which the
stand-in `auth.uid()` reads. `service_role` is NOINHERIT, on Supabase as here: after `SET ROLE` it
holds only what is granted to it by name, never what its memberships hold.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from tests.test_security import as_user

LoginRole = Callable[[str], Awaitable[str]]


class ApiRoles:
    """`await api.service_role()`, `await api.user(ALICE)`, `await api.anon()`: each a connection of
    its own, closed by `close()` (the `api` fixture does it)."""

    def __init__(self, db_url: str, login_role: LoginRole) -> None:
        self._db_url = db_url
        self._login_role = login_role
        self._logins: dict[str, str] = {}
        self._open: list[asyncpg.Connection] = []

    async def _connect(self, role: str, claims: dict[str, str] | None) -> asyncpg.Connection:
        if role not in self._logins:
            self._logins[role] = await self._login_role(role)
        conn = await asyncpg.connect(as_user(self._db_url, self._logins[role]))
        self._open.append(conn)
        await conn.execute(f"SET ROLE {role}")
        if claims is not None:
            await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", json.dumps(claims))
        return conn

    async def service_role(self) -> asyncpg.Connection:
        """A request made with the service key (the Edge Functions' admin client)."""
        return await self._connect("service_role", {"role": "service_role"})

    async def user(self, user: uuid.UUID, *, legacy: bool = False) -> asyncpg.Connection:
        """A request carrying `user`'s JWT; `legacy`: the claim as older PostgREST sets it."""
        if legacy:
            conn = await self._connect("authenticated", None)
            await conn.execute("SELECT set_config('request.jwt.claim.sub', $1, false)", str(user))
            return conn
        return await self._connect("authenticated", {"sub": str(user), "role": "authenticated"})

    async def anon(self) -> asyncpg.Connection:
        """A request with the anon key and no user."""
        return await self._connect("anon", {"role": "anon"})

    async def close(self) -> None:
        for conn in self._open:
            await conn.close()
        self._open.clear()
