"""Secret values masked wherever text leaves the process: stored errors, log lines, Sentry events.

An upstream that echoes the API key it was sent (a gateway's 401 body, a proxy's error page)
would otherwise put that key into `last_error`, the logs, `jobrunner status` and Sentry. The
values to mask are the core's own credentials, every environment variable whose name marks it
as a secret, and whatever a plugin registers with `register_secret`. They are matched as one
compiled alternation, rebuilt only when the set changes; text that holds none of them costs one
C substring search per written form, and nothing is scanned for a job that succeeds.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel, SecretStr

from jobrunner.dsn import InvalidDatabaseUrl, parse_database_url, redact

if TYPE_CHECKING:
    from jobrunner.settings import Settings

MASK = "[redacted]"
# shorter values would mask ordinary words in every message
MIN_ENV_SECRET_LENGTH = 8
MIN_SECRET_LENGTH = 4
# environment variable names that mark a secret: *_KEY, *_TOKEN, *_SECRET, *PASSWORD*, *_DSN,
# *_CREDENTIALS (and the spellings next to them: *_SECRET_KEY, *_PASS, *_PWD, *_PASSPHRASE)
SECRET_ENV_NAME = re.compile(
    r"(?:_KEY|_TOKEN|_SECRET|_DSN|_CREDENTIALS?|_PASS|_PWD|_PASSPHRASE)$|PASSWORD|SECRET", re.IGNORECASE
)
_NOTHING = re.compile(r"(?!)")


class SecretValues:
    """A set of secret values and the one pattern that finds any of them in text."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        # the forms longest first (a secret that contains another is masked whole) and their
        # alternation, replaced together in one assignment: readers take no lock
        self._matcher: tuple[tuple[str, ...], re.Pattern[str]] = ((), _NOTHING)
        self._lock = threading.Lock()

    def add(self, values: Iterable[str], min_length: int = MIN_SECRET_LENGTH) -> None:
        with self._lock:
            forms = set(self._forms)
            for value in values:
                if len(value) >= min_length:
                    forms.update(_written_forms(value))
            if forms != self._forms:
                ordered = tuple(sorted(forms, key=len, reverse=True))
                self._matcher = (ordered, re.compile("|".join(re.escape(form) for form in ordered)))
                self._forms = forms

    def clear(self) -> None:
        with self._lock:
            self._forms = set()
            self._matcher = ((), _NOTHING)

    def __len__(self) -> int:
        return len(self._forms)

    def mask(self, text: str) -> str:
        forms, pattern = self._matcher
        # `in` is a C substring search, several times faster than the alternation's scan of
        # text that holds none of the forms (the common case); the regex then masks them all
        for form in forms:
            if form in text:
                return pattern.sub(MASK, text)
        return text


def _written_forms(value: str) -> set[str]:
    """`value` as it may appear in text: as is, JSON- and repr-escaped, percent-encoded."""
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }
    return {form for form in forms if form}


_secrets = SecretValues()


def register_secret(value: str) -> None:
    """Mask `value` in every error message, traceback, log line and Sentry event from now on.

    For credentials a plugin holds that jobrunner cannot see in the environment (read from a
    file or a vault). Values shorter than 4 characters are ignored: they would mask words."""
    _secrets.add([value])


def registered_secret_count() -> int:
    """How many written forms are masked (for tests and the start-up log)."""
    return len(_secrets)


def forget_secrets() -> None:
    """Mask nothing any more (tests)."""
    _secrets.clear()


def mask_secrets(text: str) -> str:
    """`text` with every registered secret value replaced by [redacted]."""
    return _secrets.mask(text)


def redact_text(text: str) -> str:
    """`text` with registered secret values and credentials in URLs or connection strings masked."""
    return redact(_secrets.mask(text))


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    """Register every secret-named environment variable's value (at least 8 characters)."""
    _secrets.add(environment_secrets(os.environ if environ is None else environ), MIN_ENV_SECRET_LENGTH)


def register_settings_secrets(settings: Settings) -> None:
    """Register the core's own credentials: database passwords, the Sentry key, secret settings."""
    _secrets.add(settings_secrets(settings))


def settings_secrets(settings: Settings) -> list[str]:
    """Database passwords, the Sentry DSN's key, and every other secret setting's value."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, dict):  # e.g. the dashboard's users and their passwords
            found += [secret for item in value.values() for secret in _nested_secrets(item)]
            continue
        if not isinstance(value, SecretStr):
            continue
        raw = value.get_secret_value()
        if name in ("database_url", "listen_database_url"):
            try:
                found += parse_database_url(raw).passwords()
            except InvalidDatabaseUrl:
                found.append(raw)
        elif name == "sentry_dsn":
            found += _url_credentials(raw, with_user=True)
        else:
            found.append(raw)
    return found


def _nested_secrets(value: object) -> list[str]:
    """The SecretStr fields of a model held in a setting (a dashboard user's password)."""
    if isinstance(value, BaseModel):
        return [v.get_secret_value() for v in vars(value).values() if isinstance(v, SecretStr)]
    return []


def environment_secrets(environ: Mapping[str, str]) -> list[str]:
    """Values of variables named like secrets, and the credentials inside those that are URLs."""
    found: list[str] = []
    for name, value in environ.items():
        if SECRET_ENV_NAME.search(name) and len(value) >= MIN_ENV_SECRET_LENGTH:
            found.append(value)
            found += _url_credentials(value, with_user=name.upper().endswith("SENTRY_DSN"))
    return found


def _url_credentials(value: str, *, with_user: bool) -> list[str]:
    """The password of a URL, and its user name where that is the credential (Sentry's key)."""
    if "://" not in value:
        return []
    try:
        parts = urlsplit(value)
    except ValueError:
        return []
    found = [unquote(parts.password)] if parts.password else []
    if with_user and parts.username:
        found.append(unquote(parts.username))
    return found
