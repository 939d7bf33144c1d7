"""The value types of jobrunner's settings and the checks behind their validators
(jobrunner.settings.Settings declares the fields and calls these)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from jobrunner.error_reporting import SDK_MISSING

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class DashboardUser(BaseModel):
    """One login of the web dashboard (JOBRUNNER_DASHBOARD_USERS)."""

    model_config = ConfigDict(extra="forbid")

    password: SecretStr
    role: Literal["read", "admin"] = "read"

    @field_validator("password")
    @classmethod
    def _long_password(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 8:
            raise ValueError("a dashboard password must have at least 8 characters")
        return value


def default_embedded_dir() -> Path:
    # Never under /root: the embedded server runs as an unprivileged user when we are root,
    # and that user cannot enter /root.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/tmp/jobrunner-embedded")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobrunner" / "embedded"


def split_commas(value: object) -> object:
    """A list given as one string: comma-separated, or a JSON list."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def checked_schema_name(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError("must be a lower-case SQL identifier: letters, digits and _, not starting with a digit")
    return value


def checked_sentry_dsn(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        try:
            from sentry_sdk.utils import BadDsn, Dsn
        except ImportError:
            raise ValueError(SDK_MISSING) from None
        try:
            Dsn(value.get_secret_value())
        except BadDsn as exc:
            raise ValueError(f"not a valid Sentry DSN ({exc})") from None
    return value


def checked_dashboard_token(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError("a dashboard token must have at least 16 characters")
    return value


def checked_tracing(value: bool) -> bool:
    if value and importlib.util.find_spec("opentelemetry") is None:
        raise ValueError("OpenTelemetry is not installed: pip install 'jobrunner[otel]' (or leave tracing off)")
    return value


def checked_event_loop(value: str) -> str:
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("uvloop is not installed (pip install uvloop, or use auto or asyncio)")
    return value
