"""Start-up as the user sees it: `jobrunner run --burst`, from the command to the first claim
and to its exit, beside a bare asyncpg script in the same run.

    .venv/bin/python -m bench.startup --repeat 7

Each round runs, one after the other (so that the machine's drift touches all of them alike):
- `python -c pass`: the interpreter alone;
- bare: `python -c` importing asyncio and asyncpg, connecting, one SELECT, closing;
- `jobrunner run --burst` on an empty queue (the daemon as shipped: the app plugin's handlers
  and schedules loaded through their entry points);
- the same with one job waiting (a probe, `--handlers bench.startup_handlers`): the command →
  the job's `started_at` (set by the daemon's first claim), the daemon's first connection →
  that claim.
The bare script's SELECT stands for the claim: command → SELECT, connect → SELECT. A first
round, not counted, writes the bytecode caches of an editable install (see `_env`).
Then once each under `python -X importtime`: the import time of both, and the biggest packages.

Each command's CPU time (user + system, from the child's rusage) is shown beside its wall time:
on this shared machine it moves much less with the load than the wall clock does.
Clocks: spawn times are the bench's wall clock, claim and connect times the database server's;
the server must run on this machine (127.0.0.1 or the embedded one). The daemon serves its
metrics endpoint on a free port (JOBRUNNER_HTTP_PORT=0), so that it cannot collide with another
daemon on 9108. Figures are medians over the rounds, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

from bench.run import fresh_database, machine_report, server_url
from jobrunner.client import AsyncClient

REPO = Path(__file__).resolve().parent.parent
STARTUP_DB = "jobrunner_bench_startup"
PYTHON = sys.executable
JOBRUNNER = str(Path(sys.executable).with_name("jobrunner"))

# the bare baseline: what any asyncpg program does before its first statement
BARE_SCRIPT = """
import asyncio, json, sys
import asyncpg

async def main():
    conn = await asyncpg.connect(sys.argv[1])
    row = await conn.fetchrow(
        "SELECT extract(epoch FROM clock_timestamp()) AS selected, extract(epoch FROM backend_start) AS connected"
        " FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    )
    await conn.close()
    print(json.dumps({"selected": float(row["selected"]), "connected": float(row["connected"])}))

asyncio.run(main())
"""


class Spawned(NamedTuple):
    started_at: float  # wall clock
    seconds: float  # to its exit
    cpu_seconds: float  # its user + system time
    stdout: str


def _spawn(command: list[str], env: dict[str, str] | None = None) -> Spawned:
    """Run a command to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_at = time.time()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise RuntimeError(f"{command[:3]} exited with {done.returncode}")
    return Spawned(started_at, seconds, cpu, done.stdout)


def _env(**extra: str) -> dict[str, str]:
    """The bench's environment without PYTHONDONTWRITEBYTECODE: an installed wheel has its
    bytecode compiled by pip, while an editable install would otherwise compile jobrunner's
    sources again in every process (about 100 ms here), which no deployment pays."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


def _daemon_env(url: str) -> dict[str, str]:
    # the repository on the path: the console script does not put the working directory there,
    # and the probe's handler module is bench.startup_handlers
    return _env(DATABASE_URL=url, JOBRUNNER_HTTP_PORT="0", PYTHONPATH=str(REPO))


async def _enqueue_probe(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM background_jobs WHERE job_type = 'startup_probe'")
        return await AsyncClient(conn).enqueue("startup_probe")
    finally:
        await conn.close()


async def _probe_row(url: str, job_id: int) -> tuple[float, float]:
    """(claimed, first connect) of the probe job, as epoch seconds."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT status, started_at, result::text AS result FROM background_jobs WHERE id = $1", job_id
        )
    finally:
        await conn.close()
    if row is None or row["status"] != "completed":
        raise RuntimeError(f"the probe job {job_id} did not complete: {row}")
    first_connect = datetime.fromisoformat(json.loads(row["result"])["first_connect"])
    return row["started_at"].timestamp(), first_connect.astimezone(UTC).timestamp()


def one_round(url: str) -> dict[str, float]:
    ms: dict[str, float] = {}
    python = _spawn([PYTHON, "-c", "pass"], _env())
    ms["python_exit"], ms["python_cpu"] = python.seconds * 1000, python.cpu_seconds * 1000
    bare_run = _spawn([PYTHON, "-c", BARE_SCRIPT, url], _env())
    bare = json.loads(bare_run.stdout)
    ms["bare_exit"], ms["bare_cpu"] = bare_run.seconds * 1000, bare_run.cpu_seconds * 1000
    ms["bare_select"] = (bare["selected"] - bare_run.started_at) * 1000
    ms["bare_connect_to_select"] = (bare["selected"] - bare["connected"]) * 1000
    empty = _spawn([JOBRUNNER, "run", "--burst"], _daemon_env(url))
    ms["empty_exit"], ms["empty_cpu"] = empty.seconds * 1000, empty.cpu_seconds * 1000
    job_id = asyncio.run(_enqueue_probe(url))
    probe = _spawn([JOBRUNNER, "run", "--burst", "--handlers", "bench.startup_handlers"], _daemon_env(url))
    claimed, connected = asyncio.run(_probe_row(url, job_id))
    ms["probe_exit"], ms["probe_cpu"] = probe.seconds * 1000, probe.cpu_seconds * 1000
    ms["probe_claim"] = (claimed - probe.started_at) * 1000
    ms["probe_connect_to_claim"] = (claimed - connected) * 1000
    return ms


def import_times(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """`python -X importtime` of a command: the total, and the top-level imports over 5 ms."""
    done = subprocess.run([PYTHON, "-X", "importtime", *command], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"{command[:3]} exited with {done.returncode} under -X importtime")
    top: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith(" ") or name.startswith("  "):
            continue  # only top-level imports: nested ones are inside their parent's figure
        top[name.strip()] = top.get(name.strip(), 0.0) + int(cumulative) / 1000
    biggest = sorted(((n, round(t, 1)) for n, t in top.items() if t >= 5), key=lambda x: -x[1])
    return {"total_ms": round(sum(top.values()), 1), "biggest_ms": biggest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="rounds; figures are their medians")
    parser.add_argument("--json", type=Path, default=Path("bench/results/startup.json"))
    args = parser.parse_args()

    server, embedded = asyncio.run(server_url())
    try:
        url = asyncio.run(fresh_database(server, STARTUP_DB))
        machine = asyncio.run(machine_report(url))
        one_round(url)  # not counted: writes the bytecode caches, warms the page cache
        rounds = [one_round(url) for _ in range(args.repeat)]
        imports = {
            "jobrunner run --burst": import_times(["-m", "jobrunner", "run", "--burst"], _daemon_env(url)),
            "bare": import_times(["-c", BARE_SCRIPT, url], _env()),
        }
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if embedded is not None:
            embedded.stop()
    median = {key: round(statistics.median(r[key] for r in rounds), 1) for key in rounds[0]}
    report = {"machine": machine, "rounds": rounds, "median_ms": median, "imports": imports}
    print_report(report, args.repeat)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


def print_report(report: dict[str, Any], repeat: int) -> None:
    m, md = report["machine"], report["median_ms"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}, PostgreSQL {m['postgres']}, "
        f"load average {m['load_average']} before, {m['load_average_after']} after"
    )
    print(f"\nstart-up, medians of {repeat} rounds, ms")
    print(f"{'':40} {'command → exit':>15} {'its CPU':>8} {'command → claim':>16} {'connect → claim':>16}")
    print(f"{'python -c pass':40} {md['python_exit']:>15} {md['python_cpu']:>8}")
    print(
        f"{'bare: asyncpg connect + one SELECT':40} {md['bare_exit']:>15} {md['bare_cpu']:>8} {md['bare_select']:>16}"
        f" {md['bare_connect_to_select']:>16}"
    )
    print(f"{'jobrunner run --burst, empty queue':40} {md['empty_exit']:>15} {md['empty_cpu']:>8}")
    print(
        f"{'jobrunner run --burst, one job waiting':40} {md['probe_exit']:>15} {md['probe_cpu']:>8}"
        f" {md['probe_claim']:>16} {md['probe_connect_to_claim']:>16}"
    )
    print(
        f"{'ratio jobrunner ÷ bare':40} {md['empty_exit'] / md['bare_exit']:>15.2f}"
        f" {md['empty_cpu'] / md['bare_cpu']:>8.2f} {md['probe_claim'] / md['bare_select']:>16.2f}"
        f" {md['probe_connect_to_claim'] / md['bare_connect_to_select']:>16.2f}"
    )
    print("(claim columns: for the bare script, its SELECT; CPU: the process's user + system time)")
    for label, imports in report["imports"].items():
        biggest = ", ".join(f"{name} {ms:.0f}" for name, ms in imports["biggest_ms"][:8])
        print(f"\nimports of {label} (-X importtime, one run): {imports['total_ms']:.0f} ms; biggest: {biggest}")


if __name__ == "__main__":
    sys.exit(main())
