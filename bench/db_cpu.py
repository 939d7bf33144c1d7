"""CPU time of the local PostgreSQL server, all its processes together, for "µs of database
CPU per job". Backends that exit during a run still count: the postmaster reaps them, and the
kernel adds a reaped child's CPU to its parent's cutime/cstime."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[str, int, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[1]), fields  # fields[1] is the parent pid


def postgres_cpu_seconds() -> float | None:
    """user+system seconds of every `postgres` process on this machine, reaped children
    included; None when no PostgreSQL runs here (a remote server)."""
    procs = {pid: st for pid in os.listdir("/proc") if pid.isdigit() and (st := _stat(pid)) and st[0] == "postgres"}
    if not procs:
        return None
    ticks = 0
    for _, parent, fields in procs.values():
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if str(parent) not in procs:  # a postmaster: add its reaped backends
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS
