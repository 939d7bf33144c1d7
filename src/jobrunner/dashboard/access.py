"""Who may use the dashboard, and for what.

With users or tokens configured (JOBRUNNER_DASHBOARD_USERS, _TOKEN, _READ_TOKEN) every request
must carry them: HTTP Basic (a user, or the user name `token` with a token as password) or
`Authorization: Bearer <token>`. The `read` role sees everything and changes nothing; `admin`
also acts on jobs, queues and schedules.

With none configured, only this machine may use it, as admin: the request must come from a
loopback address and name a loopback host (the Host header). The second check stops DNS
rebinding, where a web page the operator visits points its own domain at 127.0.0.1 and reads
the dashboard through the operator's browser. `jobrunner dashboard` refuses to bind anything
but loopback without users or a token (refusal_to_bind).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from jobrunner.settings import Settings

Role = Literal["read", "admin"]
TOKEN_USER = "token"


@dataclass(frozen=True)
class Viewer:
    """Who sent a request: `name` as the audit trail records it."""

    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        return self.role == "admin"


def is_loopback_host(host: str) -> bool:
    """A host name or address that can only mean this machine."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(host_header: str) -> str:
    """The host part of a Host header (`name:port`, `[::1]:port`)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class AccessPolicy:
    def __init__(self, settings: Settings) -> None:
        self._users = {
            name: (user.password.get_secret_value(), user.role) for name, user in settings.dashboard_users.items()
        }
        self._tokens: list[tuple[str, Role]] = []
        if settings.dashboard_token is not None:
            self._tokens.append((settings.dashboard_token.get_secret_value(), "admin"))
        if settings.dashboard_read_token is not None:
            self._tokens.append((settings.dashboard_read_token.get_secret_value(), "read"))

    @property
    def configured(self) -> bool:
        return bool(self._users or self._tokens)

    def refusal_to_bind(self, host: str) -> str | None:
        """Why the dashboard may not listen on `host`; None when it may."""
        if self.configured or is_loopback_host(host):
            return None
        return (
            f"the dashboard would listen on {host}, which is not loopback, without authentication: set "
            "JOBRUNNER_DASHBOARD_USERS or JOBRUNNER_DASHBOARD_TOKEN (or bind 127.0.0.1)"
        )

    def _token_role(self, token: str) -> Role | None:
        found: Role | None = None
        for expected, role in self._tokens:  # every token compared: the time says nothing
            if _same(token, expected):
                found = role
        return found

    def viewer(self, authorization: str | None, client_host: str | None, host_header: str | None) -> Viewer | None:
        """The viewer a request's headers prove, or None (then: 401, or 403 when unauthenticated
        access is not for this request)."""
        if not self.configured:
            if client_host and is_loopback_host(client_host) and host_header and is_loopback_host(host_of(host_header)):
                return Viewer(f"local@{client_host}", "admin")
            return None
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            role = self._token_role(credentials)
            return Viewer(TOKEN_USER, role) if role else None
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if user == TOKEN_USER:
            role = self._token_role(password)
            return Viewer(TOKEN_USER, role) if role else None
        expected = self._users.get(user)
        # a missing user costs the same comparison as a wrong password
        matches = _same(password, expected[0] if expected else "\x00" * 16)
        if expected is None or not matches:
            return None
        return Viewer(user, expected[1])
