"""Configured secret values are masked before an error is stored, logged or shown."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from jobrunner import JobContext, Settings, handler, redaction, register_secret
from jobrunner.redaction import (
    forget_secrets,
    mask_secrets,
    redact_text,
    register_environment_secrets,
    register_settings_secrets,
)
from tests.secret_process_handlers import PLUGIN_TOKEN
from tests.support import jobrunner_process, running_daemon, wait_for

OPENAI_KEY = "sk-proj-Env7Secret9Value"
SECRET_VALUES = (OPENAI_KEY, PLUGIN_TOKEN)


async def test_a_secret_echoed_by_an_upstream_error_is_stored_logged_and_shown_masked(
    db_url: str, conn: asyncpg.Connection
) -> None:
    echo_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, max_attempts) VALUES ('echo_env_key', 1) RETURNING id"
    )
    plugin_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, max_attempts) VALUES ('echo_plugin_token', 1) RETURNING id"
    )
    daemon = jobrunner_process(
        db_url,
        "run",
        "--burst",
        "--handlers",
        "tests.secret_process_handlers",
        env={"OPENAI_API_KEY": OPENAI_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = daemon.communicate(timeout=60)
    logs = (out + err).decode(errors="replace")
    assert daemon.returncode == 0, logs
    await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'dead'", expect=2)

    rows = await conn.fetch(
        "SELECT id, last_error, last_error_traceback FROM background_jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
        [echo_id, plugin_id],
    )
    for row in rows:
        assert "[redacted]" in row["last_error"], row["last_error"]
        assert "GatewayError" in row["last_error_traceback"]
        for value in SECRET_VALUES:
            assert value not in row["last_error"]
            assert value not in row["last_error_traceback"]
    assert "gateway answered" in logs and "job dead" in logs
    leaked_logs = [line for line in logs.splitlines() if any(value in line for value in SECRET_VALUES)]
    assert not leaked_logs, leaked_logs

    status = jobrunner_process(db_url, "status", env={"COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    status_out, status_err = status.communicate(timeout=60)
    shown = (status_out + status_err).decode(errors="replace")
    assert status.returncode == 0, shown
    assert "401 from gateway" in shown
    assert not any(value in shown for value in SECRET_VALUES), shown


@pytest.fixture
def secrets() -> Iterator[None]:
    forget_secrets()
    try:
        yield
    finally:
        forget_secrets()


def test_secret_named_environment_variables_are_masked_in_every_written_form(secrets: None) -> None:
    register_environment_secrets(
        {
            "OPENAI_API_KEY": "sk-abc\"def'ghi",
            "EXPO_ACCESS_TOKEN": "expo-token-1234",
            "SUPABASE_JWT_SECRET": "jwt-secret-5678",
            "PGPASSWORD": "pg-pass-word",
            "BACKUP_DSN": "postgresql://u:dsn-pass-9@h/db",
            "GCP_CREDENTIALS": "gcp-credentials-json",
            "SHORT_TOKEN": "short",  # under 8 characters: would mask words
            "HOME": "/root/home-directory",  # not named like a secret
        }
    )
    text = (
        'key sk-abc"def\'ghi, json "sk-abc\\"def\'ghi", url sk-abc%22def%27ghi, expo-token-1234 jwt-secret-5678 '
        "pg-pass-word dsn-pass-9 gcp-credentials-json short /root/home-directory"
    )
    masked = mask_secrets(text)
    for gone in ("sk-abc", "expo-token", "jwt-secret", "pg-pass", "dsn-pass-9", "gcp-credentials"):
        assert gone not in masked, masked
    assert "short" in masked and "/root/home-directory" in masked


def test_the_cores_own_credentials_are_masked(secrets: None) -> None:
    settings = Settings(
        database_url="postgresql://app:db-user-pass@db/app?sslpassword=ssl-key-pass",
        listen_database_url="postgresql://app@db/app?password=listen-pass",
        sentry_dsn="https://sentrypublickey123@o1.ingest.sentry.io/42",
    )
    register_settings_secrets(settings)
    masked = mask_secrets("db-user-pass ssl-key-pass listen-pass sentrypublickey123 app db")
    assert masked == "[redacted] [redacted] [redacted] [redacted] app db"


def test_plugins_register_more_and_the_pattern_is_rebuilt_only_on_change(secrets: None) -> None:
    assert mask_secrets("nothing registered") == "nothing registered"
    register_secret("vault-held-credential")
    pattern = redaction._secrets._matcher
    register_secret("vault-held-credential")
    register_secret("abc")  # too short to be told from ordinary text
    assert redaction._secrets._matcher is pattern
    assert redact_text("got vault-held-credential and abc") == "got [redacted] and abc"
    # a longer secret containing a shorter one is masked whole
    register_secret("vault-held-credential-v2")
    assert mask_secrets("vault-held-credential-v2") == "[redacted]"


async def test_status_masks_secrets_in_rows_stored_before_masking(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, status, attempts, last_error, finished_at)"
        " VALUES ('echo_env_key', 'dead', 1, $1, now()) RETURNING id",
        f"401: bad key {OPENAI_KEY}",
    )
    for args in (
        ("status",),
        ("status", "--json"),
        ("status", "--job", str(job_id)),
        ("status", "--json", "--job", str(job_id)),
    ):
        proc = jobrunner_process(
            db_url,
            *args,
            env={"OPENAI_API_KEY": OPENAI_KEY, "COLUMNS": "400"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        shown = (out + err).decode(errors="replace")
        assert proc.returncode == 0, shown
        assert "401: bad key [redacted]" in shown, shown
        assert OPENAI_KEY not in shown


async def test_a_daemon_embedded_without_the_cli_masks_the_environments_secrets(
    db_url: str, conn: asyncpg.Connection, secrets: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application that runs `Daemon` in its own process gets the same masking as `jobrunner run`."""
    monkeypatch.setenv("EMBEDDING_APP_API_KEY", "sk-embed-Secret7Value")

    @handler("echo_embedded_key")
    async def echo_embedded_key(ctx: JobContext[Any]) -> None:
        raise RuntimeError("upstream said: bad key sk-embed-Secret7Value")

    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, max_attempts) VALUES ('echo_embedded_key', 1) RETURNING id"
    )
    async with running_daemon(db_url, [echo_embedded_key]):
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="dead")
    row = await conn.fetchrow("SELECT last_error, last_error_traceback FROM background_jobs WHERE id = $1", job_id)
    assert row is not None
    assert "[redacted]" in row["last_error"], row["last_error"]
    assert "sk-embed-Secret7Value" not in row["last_error"] + row["last_error_traceback"]
