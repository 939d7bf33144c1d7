"""Settings from the environment, and database URLs: pooler flags and redaction."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError

from jobrunner.dsn import parse_database_url, redact
from jobrunner.settings import Settings

PASSWORD = "hunter2-S3CRET"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets counts: no JOBRUNNER_* or DATABASE_URL from the outside."""
    import os

    for name in list(os.environ):
        if name.startswith("JOBRUNNER_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_defaults() -> None:
    s = settings()
    assert s.database_url is None
    assert s.queues == ["default"]
    assert s.schema_name == "public"
    assert s.effective_heartbeat_interval == pytest.approx(s.lease_seconds / 3)


def test_queues_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_QUEUES", "a,b")
    assert settings().queues == ["a", "b"]
    monkeypatch.setenv("JOBRUNNER_QUEUES", " mail , , push ")
    assert settings().queues == ["mail", "push"]
    monkeypatch.setenv("JOBRUNNER_QUEUES", '["x", "y"]')
    assert settings().queues == ["x", "y"]


def test_empty_queue_list_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_QUEUES", " , ")
    with pytest.raises(ValidationError, match="at least one queue"):
        settings()


def test_numbers_and_flags_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_CONCURRENCY", "25")
    monkeypatch.setenv("JOBRUNNER_LISTEN", "false")
    monkeypatch.setenv("JOBRUNNER_LEASE_SECONDS", "12.5")
    s = settings()
    assert (s.concurrency, s.listen, s.lease_seconds) == (25, False, 12.5)
    monkeypatch.setenv("JOBRUNNER_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="concurrency"):
        settings()


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("0", 0), ("250", 250)])
def test_prefetch_is_auto_or_a_number(monkeypatch: pytest.MonkeyPatch, value: str, expected: object) -> None:
    assert settings().prefetch == "auto"
    monkeypatch.setenv("JOBRUNNER_PREFETCH", value)
    assert settings().prefetch == expected


def test_prefetch_names_what_it_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_PREFETCH", "sometimes")
    with pytest.raises(ValidationError) as caught:
        settings()
    assert "'auto'" in str(caught.value) and "valid integer" in str(caught.value)


def test_database_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db/plain")
    s = settings()
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql://app@db/plain"
    # the prefixed name wins over the generic one
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", "postgresql://app@db/prefixed")
    s = settings()
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql://app@db/prefixed"


def test_schema_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_SCHEMA", "tenant_a")
    assert settings().schema_name == "tenant_a"


@pytest.mark.parametrize("bad", ["Tenant", "1tenant", "ten-ant", "ten ant", 'x"; DROP TABLE y; --', "a" * 64, ""])
def test_invalid_schema_name_names_the_field(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("JOBRUNNER_SCHEMA", bad)
    with pytest.raises(ValidationError) as raised:
        settings()
    errors = raised.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == ("JOBRUNNER_SCHEMA",)
    assert "lower-case SQL identifier" in str(raised.value)


def test_schema_name_by_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None, schema_name="tenant_a").schema_name == "tenant_a"  # type: ignore[call-arg]


def test_heartbeat_must_stay_under_half_the_lease() -> None:
    with pytest.raises(ValidationError, match="heartbeat_interval must be under half of lease_seconds"):
        Settings(_env_file=None, lease_seconds=10, heartbeat_interval=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="heartbeat_interval"):
        Settings(_env_file=None, lease_seconds=10, heartbeat_interval=7)  # type: ignore[call-arg]
    s = Settings(_env_file=None, lease_seconds=10, heartbeat_interval=4.9)  # type: ignore[call-arg]
    assert s.effective_heartbeat_interval == 4.9


def test_heartbeat_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_LEASE_SECONDS", "6")
    monkeypatch.setenv("JOBRUNNER_HEARTBEAT_INTERVAL", "3")
    with pytest.raises(ValidationError, match="heartbeat_interval"):
        settings()


def test_settings_never_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{PASSWORD}@db.example.com:6543/postgres?pgbouncer=true")
    monkeypatch.setenv("JOBRUNNER_LISTEN_DATABASE_URL", f"postgresql://app:{PASSWORD}@db.example.com:5432/postgres")
    s = settings()
    assert s.database_url is not None and PASSWORD in s.database_url.get_secret_value()
    for shown in (str(s), repr(s), f"{s}", str(s.model_dump()), s.model_dump_json()):
        assert PASSWORD not in shown
    assert "**********" in repr(s)


# -- database URLs -------------------------------------------------------------------------


def test_pgbouncer_flag_is_stripped_and_other_params_kept() -> None:
    parsed = parse_database_url(
        "postgresql://app:pw@pooler.example.com:6543/postgres"
        "?sslmode=require&pgbouncer=true&application_name=jobs&connection_limit=1&pool_timeout=10"
    )
    assert parsed.behind_pooler is True
    parts = urlsplit(parsed.url)
    assert (parts.scheme, parts.username, parts.password, parts.hostname, parts.port, parts.path) == (
        "postgresql",
        "app",
        "pw",
        "pooler.example.com",
        6543,
        "/postgres",
    )
    assert parse_qsl(parts.query) == [("sslmode", "require"), ("application_name", "jobs")]


@pytest.mark.parametrize(
    ("query", "flagged"),
    [
        ("?pgbouncer=true", True),
        ("?pgbouncer=1", True),
        ("?pgbouncer=TRUE", True),
        ("?pgbouncer=false", False),
        ("", False),
    ],
)
def test_pgbouncer_values(query: str, flagged: bool) -> None:
    parsed = parse_database_url(f"postgres://u@h/db{query}")
    assert parsed.behind_pooler is flagged
    assert "pgbouncer" not in parsed.url
    assert parsed.url == "postgres://u@h/db"


def test_pooler_flag_from_the_setting() -> None:
    parsed = parse_database_url("postgresql://u@h/db?sslmode=disable", pgbouncer=True)
    assert parsed.behind_pooler is True
    assert parsed.url == "postgresql://u@h/db?sslmode=disable"


def test_url_without_client_params_is_unchanged() -> None:
    url = "postgresql://user:p%40ss%2Fword@db.internal:5433/app?sslmode=verify-full&target_session_attrs=read-write"
    assert parse_database_url(url).url == url
    assert parse_database_url(url).behind_pooler is False


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="must start with postgresql:// or postgres://"):
        parse_database_url("mysql://u:p@h/db")
    with pytest.raises(ValueError, match="no scheme"):
        parse_database_url("localhost/db")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app:s3cret@db/x?sslmode=require", "postgresql://app:***@db/x?sslmode=require"),
        ("postgresql://:s3cret@db/x", "postgresql://***@db/x"),
        ("postgresql://app:p%40s3cret@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("postgresql://db/x", "postgresql://db/x"),
    ],
)
def test_redact_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3cret" not in redact(url)
    assert parse_database_url(url).redacted() == shown


def test_redact_keeps_an_ipv6_host_valid() -> None:
    assert redact("postgresql://app:s3cret@[::1]:5432/x") == "postgresql://app:***@[::1]:5432/x"
