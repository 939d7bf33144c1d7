"""Database URLs: spot a transaction pooler and keep its flag away from the server."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# Query parameters that describe the pooler to clients (Supabase, Prisma) and that the server
# would reject as unknown settings if a driver passed them on.
_CLIENT_ONLY_PARAMS = frozenset({"pgbouncer", "connection_limit", "pool_timeout"})
_TRUE = frozenset({"1", "true", "yes", "on"})


class InvalidDatabaseUrl(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseUrl:
    url: str
    behind_pooler: bool

    def redacted(self) -> str:
        return redact(self.url)


def parse_database_url(raw: str, *, pgbouncer: bool = False) -> DatabaseUrl:
    """Strip client-only parameters; `behind_pooler` from `?pgbouncer=true` or the setting."""
    parts = urlsplit(raw)
    if parts.scheme not in ("postgres", "postgresql"):
        raise InvalidDatabaseUrl(
            f"database URL must start with postgresql:// or postgres:// (got {parts.scheme or 'no'} scheme)"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    flagged = any(k == "pgbouncer" and v.lower() in _TRUE for k, v in query)
    kept = [(k, v) for k, v in query if k not in _CLIENT_ONLY_PARAMS]
    # quote (not quote_plus): libpq reads a "+" in a query value literally
    url = urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
    return DatabaseUrl(url=url, behind_pooler=pgbouncer or flagged)


def redact(url: str) -> str:
    """The URL with its password replaced, safe for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps [ ] around an IPv6 address, and the port
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
