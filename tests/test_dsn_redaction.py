"""Database passwords never reach the logs, whatever form the URL gives them in."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from jobrunner.dsn import InvalidDatabaseUrl, parse_database_url, redact
from tests.support import jobrunner_process, url_with_query

LEFT = "Left7Secret"
RIGHT = "Right9Secret"
FRAGMENTS = (LEFT, RIGHT)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, for the whole test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def url_forms(port: int) -> dict[str, str]:
    where = f"127.0.0.1:{port}/app"
    return {
        "userinfo": f"postgresql://postgres:{LEFT}{RIGHT}@{where}",
        "password parameter": f"postgresql://postgres@{where}?password={LEFT}{RIGHT}",
        "password parameter with &": f"postgresql://postgres@{where}?password={LEFT}&{RIGHT}&sslmode=disable",
        "sslpassword parameter": f"postgresql://postgres@{where}?sslmode=disable&sslpassword={LEFT}{RIGHT}",
        "unencoded @": f"postgresql://postgres:{LEFT}@{RIGHT}@{where}",
        "unencoded /": f"postgresql://postgres:{LEFT}/{RIGHT}@{where}",
        "unencoded :": f"postgresql://postgres:{LEFT}:{RIGHT}@{where}",
        "unencoded #": f"postgresql://postgres:{LEFT}#{RIGHT}@{where}",
        "unencoded ?": f"postgresql://postgres:{LEFT}?{RIGHT}@{where}",
        "key=value conninfo": f"host=127.0.0.1 port={port} user=postgres password={LEFT}{RIGHT}",
        "quoted conninfo": f"host=127.0.0.1 port={port} password='{LEFT} {RIGHT}'",
    }


def assert_no_fragment(label: str, output: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in output, f"{label}: {fragment!r} leaked in:\n{output}"


@pytest.mark.process
async def test_no_password_form_leaks_from_a_daemon_that_cannot_connect(dead_port: int) -> None:
    forms = url_forms(dead_port)
    procs = {
        label: jobrunner_process(
            url,
            "run",
            "--handlers",
            "tests.process_handlers",
            env={"JOBRUNNER_CONNECT_TIMEOUT": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for label, url in forms.items()
    }

    async def output_of(label: str, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stderr is not None
        seen = b""
        # until it has said it cannot connect (or gave up on the URL and exited)
        while b"unreachable" not in seen and proc.poll() is None:
            line = await asyncio.to_thread(proc.stderr.readline)
            if not line:
                break
            seen += line
        proc.terminate()
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        return (out + seen + err).decode(errors="replace")

    outputs = await asyncio.wait_for(
        asyncio.gather(*(output_of(label, proc) for label, proc in procs.items())), timeout=90
    )
    leaked = []
    for label, output in zip(procs, outputs, strict=True):
        if "unreachable" not in output and "jobrunner:" not in output:
            leaked.append(f"{label}: neither retried nor explained: {output[-300:]}")
        leaked += [f"{label}: {line}" for line in output.splitlines() if any(f in line for f in FRAGMENTS)]
    assert not leaked, "\n".join(leaked)


def test_daemon_started_line_has_no_password_parameter(db_url: str) -> None:
    # trust auth: the password is sent and ignored; the URL may already have a query (a socket host)
    url = url_with_query(db_url, f"password={LEFT}{RIGHT}")
    proc = jobrunner_process(url, "run", "--burst", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    output = (out + err).decode(errors="replace")
    assert proc.returncode == 0, output
    assert "daemon started" in output
    assert_no_fragment("?password=", output)


@pytest.mark.parametrize("label", list(url_forms(5432)))
def test_redact_hides_every_form(label: str) -> None:
    raw = url_forms(5432)[label]
    assert_no_fragment(label, redact(raw))
    try:
        parsed = parse_database_url(raw)
    except InvalidDatabaseUrl as exc:
        assert_no_fragment(label, str(exc))
    else:
        assert_no_fragment(label, parsed.redacted())


def test_redact_keeps_what_is_not_secret() -> None:
    assert redact("postgresql://app:pw@db.internal:6543/app?sslmode=require&password=x") == (
        "postgresql://app:***@db.internal:6543/app?sslmode=require&password=***"
    )
    assert redact("postgresql://app@[::1]:5432/app") == "postgresql://app@[::1]:5432/app"
    assert redact("host=db port=5432 password='a b' user=app") == "host=db port=5432 password=*** user=app"


def test_a_password_with_an_unencoded_at_sign_is_read_as_the_server_would_connect() -> None:
    parsed = parse_database_url(f"postgresql://postgres:{LEFT}@{RIGHT}@db:5432/app")
    assert urlsplit(parsed.url).hostname == "db"
    assert urlsplit(parsed.url).password == f"{LEFT}%40{RIGHT}"


def _hostile(size: int) -> list[str]:
    """Texts of about `size` characters that made an unanchored pattern backtrack."""
    return [
        "x= http://h/?" + "a" * size,
        "x= " + "a" * size + " ://",
        "x= http://h/?" + "&a" * (size // 2) + "=",
        "x= http://" + "@" * size,
        "password= '" + "\\'" * (size // 2),
    ]


def _redact_seconds(texts: list[str]) -> float:
    """The best of three runs: a loaded machine only ever adds time."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for text in texts:
            redact(text)
        best = min(best, time.perf_counter() - started)
    return best


def test_redact_takes_linear_time_on_hostile_text() -> None:
    """Error text is the attacker's: no input may make the scan quadratic (a 50 kB message
    took seconds with an unanchored query pattern). Growth, not speed: five times the input
    takes about five times as long when linear, twenty-five when quadratic."""
    small = _redact_seconds(_hostile(10_000))
    large = _redact_seconds(_hostile(50_000))
    print(f"redact: {small * 1000:.1f} ms for 10 kB inputs, {large * 1000:.1f} ms for 50 kB")
    assert large / small < 12


@pytest.mark.parametrize(
    ("raw", "server"),
    [
        ("postgresql://u:pw@db.example.com:6543/app?pgbouncer=true", "db.example.com:6543"),
        ("postgresql://u:pw@db.example.com/app", "db.example.com:5432"),
        ("postgresql://u:pw@[2001:db8::1]:5433/app", "[2001:db8::1]:5433"),
        ("postgresql://u:pw@/app?host=/var/run/postgresql/", "/var/run/postgresql/.s.PGSQL.5432"),
        ("postgresql://u:pw@/app?host=/tmp/sockets&port=5499", "/tmp/sockets/.s.PGSQL.5499"),
        ("postgresql:///app", "the default host (PGHOST):5432"),
    ],
)
def test_the_server_is_named_without_the_login(raw: str, server: str) -> None:
    assert parse_database_url(raw).server() == server
