"""CPU time of one local PostgreSQL server, all its processes together, for "µs of database
CPU per job". Backends that exit during a run still count: the postmaster reaps them, and the
kernel adds a reaped child's CPU to its parent's cutime/cstime."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> tuple[int, list[str]] | None:
    """(parent pid, the fields after the command name) of a process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields


def postgres_cpu_seconds(backend_pid: int) -> float | None:
    """user+system seconds of the server one of whose backends is `backend_pid` (from
    `SELECT pg_backend_pid()`): its postmaster, every child, and the children it reaped.
    None when that process is not on this machine (a remote server)."""
    backend = _stat(backend_pid)
    if backend is None:
        return None
    postmaster = backend[0]
    own = _stat(postmaster)
    if own is None:
        return None
    ticks = sum(int(v) for v in own[1][11:15])  # utime, stime, cutime, cstime
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (child := _stat(pid)) and child[0] == postmaster:
            ticks += int(child[1][11]) + int(child[1][12])
    return ticks / _TICKS
