"""Sentry reporting of failed jobs, received by a local HTTP endpoint that speaks the envelope protocol."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest
import sentry_sdk
from pydantic import SecretStr, ValidationError

from jobrunner import JobContext, PermanentError, RetryLater, Settings, handler, register_secret
from jobrunner.error_reporting import (
    REDACTED,
    SentryUnavailable,
    init_error_reporting,
    scrub,
    shutdown_error_reporting,
)
from jobrunner.redaction import forget_secrets
from tests.support import REPO_ROOT, running_daemon, wait_for

SECRET = "sk-live-123"
URL_PASSWORD = "pa55word-in-a-url"


@dataclass
class Envelope:
    headers: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for header, body in self.items if header.get("type") == "event"]


def parse_envelope(data: bytes) -> Envelope:
    """Sentry's envelope: a JSON header line, then items of a JSON header line and a payload
    (`length` bytes when given, else up to the next newline)."""
    first, _, rest = data.partition(b"\n")
    envelope = Envelope(json.loads(first), [])
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        header = json.loads(line)
        if "length" in header:
            body, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            body, _, rest = rest.partition(b"\n")
        envelope.items.append((header, body))
    return envelope


def decode_body(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        brotli = pytest.importorskip("brotli")
        return bytes(brotli.decompress(body))
    return body


@dataclass
class SentryEndpoint:
    """A stand-in for sentry.io on 127.0.0.1: stores every envelope it is sent."""

    port: int
    raw: list[bytes] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes for event in envelope.events()]


@pytest.fixture
def sentry_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[SentryEndpoint]:
    for proxy in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # the envelopes must go to loopback, nowhere else

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            endpoint.raw.append(body)
            data = decode_body(body, self.headers.get("Content-Encoding"))
            endpoint.raw.append(data)
            if self.path.startswith("/api/1/envelope/"):
                endpoint.envelopes.append(parse_envelope(data))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    endpoint = SentryEndpoint(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        shutdown_error_reporting()
        server.shutdown()
        server.server_close()


@handler("report_crash")
async def report_crash(ctx: JobContext[dict[str, Any]]) -> None:
    raise ValueError(f"cannot reach postgresql://app:{URL_PASSWORD}@db.internal/app")


@handler("report_permanent")
async def report_permanent(ctx: JobContext[dict[str, Any]]) -> None:
    raise PermanentError("bad input: expected, not reported")


@handler("report_retry_later")
async def report_retry_later(ctx: JobContext[dict[str, Any]]) -> None:
    raise RetryLater(3600 if ctx.job.max_attempts > 1 else 0, "upstream busy")


PAYLOAD = {
    "user_id": "u1",
    "api_key": SECRET,
    "nested": {"items": [{"Authorization": f"Bearer {SECRET}", "note": "kept"}], "db_password": SECRET},
}


async def test_dead_and_unexpected_failures_are_reported_tagged_and_scrubbed(
    db_url: str, conn: asyncpg.Connection, sentry_endpoint: SentryEndpoint
) -> None:
    payload = json.dumps(PAYLOAD)
    dead_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, max_attempts, queue) VALUES ('report_crash', $1, 1, 'default')"
        " RETURNING id",
        payload,
    )
    retried_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, max_attempts, scheduled_at)"
        " VALUES ('report_crash', $1, 3, now()) RETURNING id",
        payload,
    )
    # expected failures: a PermanentError, and a RetryLater that still has attempts left
    await conn.execute("INSERT INTO background_jobs (job_type) VALUES ('report_permanent')")
    waiting_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, max_attempts) VALUES ('report_retry_later', 3) RETURNING id"
    )
    # ...but a job that dies is reported whatever killed it
    dead_later_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, max_attempts) VALUES ('report_retry_later', 1) RETURNING id"
    )

    async with running_daemon(
        db_url, [report_crash, report_permanent, report_retry_later], sentry_dsn=sentry_endpoint.dsn
    ):
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", dead_id, expect="dead")
        await wait_for(
            conn,
            "SELECT count(*) FROM background_jobs WHERE job_type <> 'report_crash' AND finished_at IS NOT NULL",
            expect=2,
        )
        await wait_for(conn, "SELECT last_error IS NOT NULL FROM background_jobs WHERE id = $1", waiting_id)
        # the retried job is rescheduled with backoff: its first attempt is what we look at
        await wait_for(conn, "SELECT last_error IS NOT NULL FROM background_jobs WHERE id = $1", retried_id)
    sentry_sdk.flush(timeout=10)  # the SDK sends from a thread: wait for its queue, not a fixed time

    events = sentry_endpoint.events()
    by_job = {event["tags"]["job_id"]: event for event in events}
    assert str(dead_id) in by_job, events
    dead = by_job[str(dead_id)]
    assert dead["tags"] == {
        "job_type": "report_crash",
        "job_id": str(dead_id),
        "attempt": "1",
        "queue": "default",
        "outcome": "dead",
    }
    assert dead["exception"]["values"][-1]["type"] == "ValueError"
    job_context = dead["contexts"]["job"]
    assert job_context["payload"]["user_id"] == "u1"
    assert job_context["payload"]["api_key"] == REDACTED
    assert job_context["payload"]["nested"]["items"][0] == {"Authorization": REDACTED, "note": "kept"}
    assert job_context["payload"]["nested"]["db_password"] == REDACTED
    assert job_context["max_attempts"] == 1
    # before_send masks the password in the exception message too
    assert "app:***@db.internal" in dead["exception"]["values"][-1]["value"]

    retried = [event for event in events if event["tags"]["job_id"] == str(retried_id)]
    assert retried[0]["tags"]["outcome"] == "retried"
    assert retried[0]["tags"]["attempt"] == "1"

    dead_later = by_job[str(dead_later_id)]
    assert dead_later["tags"]["outcome"] == "dead"
    assert dead_later["exception"]["values"][-1]["type"] == "RetryLater"

    # expected failures of jobs that still have attempts (or fail for good on purpose) are not reported
    assert str(waiting_id) not in by_job
    assert {event["tags"]["job_type"] for event in events} == {"report_crash", "report_retry_later"}
    # the last attempt is reported once, by the dead path, not also as an unexpected failure
    assert [event["tags"]["job_id"] for event in events].count(str(dead_id)) == 1

    received = b"".join(sentry_endpoint.raw)
    assert received, "the endpoint received nothing"
    assert SECRET.encode() not in received
    assert URL_PASSWORD.encode() not in received


async def test_nothing_is_reported_without_a_dsn(
    db_url: str, conn: asyncpg.Connection, sentry_endpoint: SentryEndpoint
) -> None:
    await conn.execute("INSERT INTO background_jobs (job_type, max_attempts) VALUES ('report_crash', 1)")
    async with running_daemon(db_url, [report_crash]):
        await wait_for(conn, "SELECT status FROM background_jobs", expect="dead")
    sentry_sdk.flush(timeout=2)
    assert sentry_endpoint.raw == []


def test_scrub_masks_secret_keys_at_any_depth_and_keeps_the_rest() -> None:
    value = {
        "token": "t",
        "list": [{"x-api-key": "k", "ok": 1}, ("SESSION_cookie", "a")],
        "url": "postgres://u:p@h/db",
        "deep": {"Password": {"not": "even inspected"}, "count": 3},
    }
    assert scrub(value) == {
        "token": REDACTED,
        "list": [{"x-api-key": REDACTED, "ok": 1}, ["SESSION_cookie", "a"]],
        "url": "postgres://u:***@h/db",
        "deep": {"Password": REDACTED, "count": 3},
    }


# values that must not reach Sentry, each under a key or in a place the old scrubbing missed
LEAKS = {
    "auth": "auth-value-7f3a",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.jwt-value-91c2",
    "pwd": "pwd-value-55d1",
    "private": "private-value-0be4",
    "sig": "sig-value-c0ffee",
    "x_amz": "amz-signature-value-d00d",
    "access_token": "access-token-value-a11ce",
    "breadcrumb": "breadcrumb-secret-value-b4d",
    "extra": "extra-secret-value-e47",
    "registered": "registered-secret-value-f00d",
}
SIGNED_URL = (
    f"https://storage.example/o/photo.jpg?sig={LEAKS['sig']}&X-Amz-Signature={LEAKS['x_amz']}"
    f"&access_token={LEAKS['access_token']}&width=200"
)


@handler("report_leaky")
async def report_leaky(ctx: JobContext[dict[str, Any]]) -> None:
    sentry_sdk.add_breadcrumb(category="http", message="GET upstream", data={"authorization": LEAKS["breadcrumb"]})
    sentry_sdk.set_extra("upstream", {"response": [{"headers": {"x-private-header": LEAKS["extra"]}}]})
    raise RuntimeError(f"upstream said no to {SIGNED_URL} (echoed {LEAKS['registered']})")


@pytest.fixture
def registered_leak() -> Iterator[None]:
    register_secret(LEAKS["registered"])  # as a plugin would, for a key it read from a vault
    try:
        yield
    finally:
        forget_secrets()


async def test_sentry_events_carry_none_of_the_secrets(
    db_url: str, conn: asyncpg.Connection, sentry_endpoint: SentryEndpoint, registered_leak: None
) -> None:
    payload = {
        "auth": LEAKS["auth"],
        "user": {"jwt": LEAKS["jwt"]},
        "login": [{"pwd": LEAKS["pwd"]}],
        "private": LEAKS["private"],
        "photo_url": SIGNED_URL,
        "user_id": "u1",
    }
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, max_attempts) VALUES ('report_leaky', $1, 1) RETURNING id",
        json.dumps(payload),
    )
    async with running_daemon(db_url, [report_leaky], sentry_dsn=sentry_endpoint.dsn):
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="dead")
    sentry_sdk.flush(timeout=10)

    events = sentry_endpoint.events()
    assert [event["tags"]["job_id"] for event in events] == [str(job_id)]
    assert events[0]["contexts"]["job"]["payload"]["user_id"] == "u1"
    assert "width=200" in events[0]["contexts"]["job"]["payload"]["photo_url"]
    received = b"".join(sentry_endpoint.raw)
    leaked = [name for name, value in LEAKS.items() if value.encode() in received]
    assert not leaked, leaked


# The child as on an install without the extra: `None` in sys.modules makes every import of
# sentry_sdk (and its submodules) raise ImportError.
WITHOUT_SENTRY_SDK = (
    "import runpy, sys; sys.modules['sentry_sdk'] = None; runpy.run_module('jobrunner', run_name='__main__')"
)


async def test_a_dsn_without_the_sentry_extra_stops_the_daemon_with_what_to_install(db_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(REPO_ROOT),
        "JOBRUNNER_HTTP_PORT": "0",
        "SENTRY_DSN": "https://publickey@o1.ingest.sentry.io/42",
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", WITHOUT_SENTRY_SDK, "run", "--burst"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 2, output
    assert "SENTRY_DSN is set but the Sentry SDK is not installed: pip install 'jobrunner[sentry]'" in output
    assert "Traceback" not in output


def test_starting_error_reporting_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "sentry_sdk"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ValidationError, match=re.escape("pip install 'jobrunner[sentry]'")):
        Settings(sentry_dsn="https://publickey@o1.ingest.sentry.io/42")
    # settings made without validation (an embedding application's own) reach the same wall
    unchecked = Settings.model_construct(sentry_dsn=SecretStr("https://publickey@o1.ingest.sentry.io/42"))
    with pytest.raises(SentryUnavailable, match=re.escape("pip install 'jobrunner[sentry]'")):
        init_error_reporting(unchecked)
