"""One `python -m jobrunner run` daemon as a real process, for the soak and memory benches:
started with JOBRUNNER_* variables, its JSON log written to a file (never piped through the
bench), its RSS and CPU read from /proc, stopped with SIGTERM like systemd or Kubernetes do."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now), VmHWM (peak resident) and friends from /proc/<pid>/status, in kB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "RssAnon", "RssFile", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        # the command name (field 2) is in parentheses and may hold spaces: split after it
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class DaemonProcess:
    env: dict[str, str]
    handlers: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    _log_file: BinaryIO | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self._log_file = self._open_log()
        command = [sys.executable, "-m", "jobrunner", "run", "--handlers", self.handlers]
        self.started_at = time.perf_counter()
        self.process = await asyncio.create_subprocess_exec(
            *command,
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log_file,
        )

    def _open_log(self) -> BinaryIO:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "wb")  # closed in stop()

    def log_events(self, event: str | None = None) -> list[dict[str, Any]]:
        events = []
        with open(self.log_path, "rb") as log:
            for raw in log:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if event is None or line.get("event") == event:
                    events.append(line)
        return events

    async def wait_ready(self, within: float = 60.0) -> float:
        """Seconds from the process start until it logged "daemon started"."""
        assert self.process is not None
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode}: {self.tail()}")
            if self.log_events("daemon started"):
                return time.perf_counter() - self.started_at
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the daemon did not start within {within} s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_bytes()[-chars:].decode(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, within: float = 120.0) -> dict[str, Any]:
        """SIGTERM, wait for the exit; the stats of its "daemon stopped" line (what it committed)."""
        assert self.process is not None
        try:
            if self.process.returncode is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.process.wait(), within)
                except TimeoutError:
                    self.process.kill()
                    await self.process.wait()
                    raise RuntimeError(f"the daemon did not stop within {within} s after SIGTERM") from None
        finally:
            if self._log_file is not None:
                self._log_file.close()
        stopped = self.log_events("daemon stopped")
        if self.process.returncode != 0 or not stopped:
            raise RuntimeError(f"the daemon exited with {self.process.returncode}: {self.tail()}")
        keys = ("claimed", "completed", "retried", "failed", "dead", "released", "cancelled", "lost_leases")
        return {key: stopped[-1].get(key) for key in keys}

    def kill(self) -> None:
        """Only when the bench itself failed with the daemon still running."""
        if self.alive():
            assert self.process is not None
            self.process.kill()


def source_state() -> dict[str, Any]:
    """The commit the daemon ran, and the files that differed from it (another engineer may be
    editing the tree while a long bench runs: the figures belong to that state)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain").splitlines()}
