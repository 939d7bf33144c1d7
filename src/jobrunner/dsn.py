"""Database URLs: spot a transaction pooler and keep its flag away from the server; keep the
password out of everything that is shown or logged."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# Query parameters that describe the pooler to clients (Supabase, Prisma) and that the server
# would reject as unknown settings if a driver passed them on.
_CLIENT_ONLY_PARAMS = frozenset({"pgbouncer", "connection_limit", "pool_timeout"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_SCHEMES = ("postgresql://", "postgres://")
MASK = "***"

# scheme://rest-of-the-url, as far as it goes in free text (the scheme starts where a run of
# scheme characters starts and is short: no text makes the search quadratic)
_URL = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,30}://)(?P<rest>[^\s\"'<>]+)")
# a query parameter whose name says it holds a credential: password, sslpassword, and the
# signatures, tokens and keys of signed or authenticated URLs (sig, X-Amz-Signature, api_key...)
_SECRET_PARAM_NAME = re.compile(r"pass|pwd|secret|token|sig|key|auth|credential|session|jwt", re.IGNORECASE)
# what starts the next query parameter after a secret one: up to it, an unencoded "&" is taken
# for part of the secret
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# key=value conninfo (libpq): password=secret, password = 'quoted \' value', sslpassword=...
# (at the start or after white space: in a URL the query rules above apply)
_CONNINFO_PASSWORD = re.compile(
    r"(?P<key>(?<!\S)(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*(?:'|$)|[^\s']+)", re.IGNORECASE
)


class InvalidDatabaseUrl(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseUrl:
    url: str
    behind_pooler: bool

    def redacted(self) -> str:
        return redact(self.url)

    def server(self) -> str:
        """Where the URL connects, for messages: `host:port`, or the Unix socket's path; never
        the user or the password. An unset host or port is libpq's default (PGHOST/PGPORT)."""
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        host = parts.hostname or query.get("host") or "the default host (PGHOST)"
        port = parts.port or query.get("port") or 5432
        if host.startswith("/"):
            return f"{host.rstrip('/')}/.s.PGSQL.{port}"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def passwords(self) -> list[str]:
        """Every credential the URL carries (for masking them wherever else they turn up)."""
        parts = urlsplit(self.url)
        found = [unquote(parts.password)] if parts.password else []
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k in ("password", "sslpassword")]
        return [p for p in found if p]


def parse_database_url(raw: str, *, pgbouncer: bool = False) -> DatabaseUrl:
    """Strip client-only parameters; `behind_pooler` from `?pgbouncer=true` or the setting.

    Messages never quote the URL: a malformed one may hold its password anywhere."""
    if not raw.lower().startswith(_SCHEMES):
        # the scheme is letters before a colon: the most a password could lend it is a user name
        scheme = urlsplit(raw).scheme
        raise InvalidDatabaseUrl(
            f"database URL must start with postgresql:// or postgres:// (got {scheme or 'no'} scheme"
            + ("; key=value connection strings are not supported)" if "=" in raw else ")")
        )
    raw = _encode_at_signs_in_userinfo(raw)
    parts = urlsplit(raw)
    if not _unambiguous(raw, parts):
        raise InvalidDatabaseUrl(
            "database URL cannot be read: percent-encode special characters in the user name, "
            "password and database name (@ as %40, / as %2F, ? as %3F, # as %23)"
        )
    if any("=" not in pair for pair in parts.query.split("&") if pair):
        # libpq refuses these too; asyncpg would send the piece as a server setting, and the
        # server's error would quote it: most likely the rest of a password cut at an unencoded &
        raise InvalidDatabaseUrl(
            "database URL has a query parameter without '=': percent-encode & in a password as %26"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    flagged = any(k == "pgbouncer" and v.lower() in _TRUE for k, v in query)
    kept = [(k, v) for k, v in query if k not in _CLIENT_ONLY_PARAMS]
    # quote (not quote_plus): libpq reads a "+" in a query value literally
    url = urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
    return DatabaseUrl(url=url, behind_pooler=pgbouncer or flagged)


def _unambiguous(raw: str, parts: SplitResult) -> bool:
    """False for an @ after the host or a port that is not a number: a password cut short by an
    unencoded / ? or #, which each parser would split differently."""
    if "@" in raw.partition("://")[2][len(parts.netloc) :]:
        return False
    try:
        parts.port  # noqa: B018 - raises ValueError when it is not a number
    except ValueError:
        return False
    return True


def _encode_at_signs_in_userinfo(raw: str) -> str:
    """`user:p@ss@host` -> `user:p%40ss@host`: the last @ before the path ends the password.

    libpq and asyncpg would split at the first one and connect to host `ss@host`; an @ after the
    path starts (an unencoded / ? or # in the password) is refused by the port check instead."""
    scheme, _, rest = raw.partition("://")
    authority_end = len(rest)
    for mark in "/?#":
        if (at := rest.find(mark)) != -1:
            authority_end = min(authority_end, at)
    authority = rest[:authority_end]
    if authority.count("@") < 2:
        return raw
    userinfo, _, host = authority.rpartition("@")
    return f"{scheme}://{userinfo.replace('@', '%40')}@{host}{rest[authority_end:]}"


def redact(text: str) -> str:
    """`text` (a URL, a key=value connection string, or free text holding either) with every
    credential replaced by ***, safe for logs.

    In a URL, everything before its last @ but the user name is taken for the password: an
    unencoded @ / : ? or # in it would otherwise leave part of it in view."""
    if "=" not in text and "@" not in text:
        return text
    if "://" in text:
        text = _URL.sub(_redact_url, text)
    if "assword" in text or "ASSWORD" in text:
        text = _CONNINFO_PASSWORD.sub(lambda m: m.group("key") + MASK, text)
    return text


def _redact_url(match: re.Match[str]) -> str:
    rest = match.group("rest")
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon or any(mark in user for mark in "/?#"):
            clean_user = "" if any(mark in user for mark in "/?#") else user
            userinfo = f"{clean_user}:{MASK}" if clean_user else MASK
        rest = f"{userinfo}@{rest}"
    head, question, query = rest.partition("?")
    if question:
        query = _redact_query(query)
    return match.group("scheme") + head + question + query


def _redact_query(query: str) -> str:
    kept: list[str] = []
    in_secret = False
    for piece in query.split("&"):
        name, equals, value = piece.partition("=")
        if in_secret and not (equals and _PARAM_NAME.fullmatch(name)):
            continue  # the rest of a secret cut at an unencoded &: masked with it
        in_secret = bool(equals and value and _SECRET_PARAM_NAME.search(name))
        kept.append(f"{name}={MASK}" if in_secret else piece)
    return "&".join(kept)
