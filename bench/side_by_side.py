"""jobrunner beside a bare SKIP LOCKED loop, in one run, as ratios: the figures drift ±30 % on a
shared 2-core machine, the ratios of systems run back to back much less.

    .venv/bin/python -m bench.side_by_side --jobs 20000 --concurrency 10,100 --rounds 3

`bench.run` and `bench.compare` print the same table (compare adds the best peer's column).
The systems, each a worker in this process on one database, every workload from an empty,
vacuumed `background_jobs`:
- jobrunner: the daemon with the bench's handlers alone (no plugin loaded, no plugin schedules);
- jobrunner + app: the daemon as `jobrunner run` builds it where the app plugin is installed:
  every handler plugin loaded through the `jobrunner.handlers` entry points, its schedules
  declared, draining the same no-op jobs (the plugin's limited types have no job waiting);
- jobrunner + 10 limits: no plugin, 10 extra job types with a max_concurrency or a global limit
  declared, none enqueued (what declaring limits costs unrelated work);
- bare loop: bench/bare_loop.py, the simplest correct asyncio + asyncpg worker on the same table.
Each round runs every system's drain at each concurrency, then every system's pick-up run; the
order of the systems rotates from round to round. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import asyncpg

from bench.bare_loop import BareLoop
from bench.latency import WARMUP, latency_summary, sample_from_enqueue_call
from bench.noop_handlers import noop
from bench.run import bench_settings, fresh_database, machine_report, server_url
from jobrunner import GlobalLimits, Handler, JobContext, NewJob, event_loop, handler
from jobrunner.client import AsyncClient
from jobrunner.daemon.daemon import Daemon
from jobrunner.dsn import parse_database_url
from jobrunner.gc_freeze import freeze_startup_heap
from jobrunner.logs import configure_logging
from jobrunner.registry import ENTRY_POINT_GROUP, HandlerRegistry
from jobrunner.settings import Settings

SIDE_DB = "jobrunner_bench_side"
# the pick-up runs' worker: concurrency 10, idle on LISTEN, the fallback poll far away (30 s), so
# that only the notification can serve a job
PICKUP_CONCURRENCY = 10
PICKUP_POLL = 30.0
LIMITED_TYPES = 10
# a worker that does not come up within this long fails the run
READY_DEADLINE = 60.0

_started: dict[int, float] = {}


@handler("pickup")
async def pickup(ctx: JobContext[dict[str, Any]]) -> None:
    _started[ctx.job.id] = time.perf_counter()


async def _idle(ctx: JobContext[dict[str, Any]]) -> None:
    return None


def limited_handlers(count: int = LIMITED_TYPES) -> list[Handler]:
    """`count` job types that declare a limit and never get a job: every other one a per-process
    max_concurrency=1 (as the app's periodic jobs), the rest a global running and rate limit
    (as the app's analyze_image)."""
    return [
        handler(f"limited_{n}", max_concurrency=1)(_idle)
        if n % 2 == 0
        else handler(f"limited_{n}", limits=GlobalLimits(max_running=5, rate=100, per_seconds=60))(_idle)
        for n in range(count)
    ]


def limited_types(registry: HandlerRegistry) -> list[str]:
    return [t for t in registry.job_types() if (h := registry.get(t)) and (h.max_concurrency or h.limits)]


def installed_plugins() -> list[str]:
    return sorted(f"{p.name} ({p.value})" for p in entry_points(group=ENTRY_POINT_GROUP))


# -- the systems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    key: str
    label: str
    # url, concurrency: one worker in burst mode until no job is left
    drain: Callable[[str, int], Awaitable[Any]]
    # url: a worker idle on LISTEN whose "pickup" handler stamps _started; yields its task
    idle_worker: Callable[[str], AbstractAsyncContextManager[asyncio.Task[Any]]]
    description: str


async def _until(ready: Callable[[], bool], worker: asyncio.Task[Any]) -> None:
    # a short spin rather than an event: the bench must not change the worker it measures
    deadline = time.perf_counter() + READY_DEADLINE
    while not ready():
        if worker.done():
            raise RuntimeError(f"the worker stopped before it was ready: {worker!r}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the worker was not ready within {READY_DEADLINE} s")
        await asyncio.sleep(0.01)


def jobrunner_system(
    key: str, label: str, registry: Callable[[], HandlerRegistry], *, plugin_schedules: bool, description: str
) -> System:
    def settings(url: str, concurrency: int) -> Settings:
        # a free port for /metrics: other daemons may run on this machine
        return bench_settings(url, concurrency).model_copy(
            update={"http_port": 0, "plugin_schedules": plugin_schedules}
        )

    async def drain(url: str, concurrency: int) -> None:
        await Daemon(settings(url, concurrency), registry(), parse_database_url(url), burst=True).run()

    @asynccontextmanager
    async def idle_worker(url: str) -> AsyncIterator[asyncio.Task[Any]]:
        idle = settings(url, PICKUP_CONCURRENCY).model_copy(update={"poll_interval": PICKUP_POLL})
        daemon = Daemon(idle, registry(), parse_database_url(url))
        task = asyncio.create_task(daemon.run())
        try:
            await _until(lambda: daemon.listener is not None and daemon.listener.listening, task)
            yield task
        finally:
            daemon.request_stop()
            await task

    return System(key, label, drain, idle_worker, description)


async def _bare_noop(job_id: int, payload: dict[str, Any]) -> None:
    return None


async def _bare_pickup(job_id: int, payload: dict[str, Any]) -> None:
    _started[job_id] = time.perf_counter()


def bare_system() -> System:
    async def drain(url: str, concurrency: int) -> None:
        await BareLoop(url, {"noop": _bare_noop}, concurrency=concurrency, burst=True).run()

    @asynccontextmanager
    async def idle_worker(url: str) -> AsyncIterator[asyncio.Task[Any]]:
        loop = BareLoop(url, {"pickup": _bare_pickup}, concurrency=PICKUP_CONCURRENCY, poll_interval=PICKUP_POLL)
        task = asyncio.create_task(loop.run())
        try:
            await _until(loop.listening.is_set, task)
            yield task
        finally:
            loop.stop()
            await task

    return System(
        "bare",
        "bare loop",
        drain,
        idle_worker,
        "bench/bare_loop.py: claim min(free slots, 100) with one UPDATE … FOR UPDATE SKIP LOCKED, "
        "complete in batches on a second connection, LISTEN; nothing else",
    )


def _bench_registry(*extra: Handler) -> HandlerRegistry:
    return HandlerRegistry([noop, pickup, *extra])


def _app_registry() -> HandlerRegistry:
    registry = HandlerRegistry.discover()  # every installed plugin, as `jobrunner run` loads them
    registry.register(noop, "bench")
    registry.register(pickup, "bench")
    return registry


SYSTEM_KEYS = ("jobrunner", "app", "limits", "bare")


def build_systems(keys: list[str]) -> tuple[list[System], list[str]]:
    """The systems asked for, in SYSTEM_KEYS' order, and notes on those left out."""
    systems: list[System] = []
    notes: list[str] = []
    for key in SYSTEM_KEYS:
        if key not in keys:
            continue
        if key == "jobrunner":
            systems.append(
                jobrunner_system(
                    "jobrunner",
                    "jobrunner",
                    _bench_registry,
                    plugin_schedules=False,
                    description="Daemon with the bench's handlers only (no plugin, no plugin schedules)",
                )
            )
        elif key == "app":
            plugins = installed_plugins()
            if not plugins:
                notes.append("with app: no handler plugin is installed (entry points jobrunner.handlers)")
                continue
            registry = _app_registry()
            systems.append(
                jobrunner_system(
                    "app",
                    "with app",
                    _app_registry,
                    plugin_schedules=True,
                    description=f"Daemon with every installed plugin ({', '.join(plugins)}) and its schedules; "
                    f"limited types: {', '.join(limited_types(registry)) or 'none'}",
                )
            )
        elif key == "limits":
            systems.append(
                jobrunner_system(
                    "limits",
                    f"{LIMITED_TYPES} limits",
                    lambda: _bench_registry(*limited_handlers()),
                    plugin_schedules=False,
                    description=f"Daemon with the bench's handlers and {LIMITED_TYPES} limited job types "
                    "(max_concurrency=1 or a global max_running + rate), none enqueued",
                )
            )
        else:
            systems.append(bare_system())
    return systems, notes


# -- the workloads ----------------------------------------------------------------------------


async def _count(conn: asyncpg.Connection, job_type: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM background_jobs WHERE status = 'completed' AND job_type = $1", job_type
    )
    return count


async def drain_run(url: str, system: System, jobs: int, concurrency: int) -> dict[str, Any]:
    """N no-op jobs enqueued in bulk, VACUUM ANALYZE, one worker until none is left; N ÷ the time
    from creating the worker to its return (its start-up included)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM background_jobs")
        await AsyncClient(conn).enqueue_many([NewJob("noop") for _ in range(jobs)])
        await conn.execute("VACUUM ANALYZE background_jobs")
        cpu_before = time.process_time()
        started = time.perf_counter()
        await system.drain(url, concurrency)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        completed = await _count(conn, "noop")
    finally:
        await conn.close()
    if completed != jobs:
        raise RuntimeError(f"{system.label}: drain verification failed: {completed} of {jobs} completed")
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(jobs / elapsed),
        "worker_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "verified_completed": completed,
    }


async def pickup_run(url: str, system: System, samples: int) -> dict[str, Any]:
    """A worker idle on LISTEN; one "pickup" job every 10 ms through AsyncClient.enqueue on the
    bench's own connection (bench.latency.sample_from_enqueue_call); both spans in ms."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM background_jobs")
        await conn.execute("VACUUM ANALYZE background_jobs")
        client = AsyncClient(conn)

        async def enqueue_one() -> int:
            return await client.enqueue("pickup")

        async with system.idle_worker(url) as worker:
            spans = await sample_from_enqueue_call(enqueue_one, _started, samples, worker)
        completed = await _count(conn, "pickup")
    finally:
        await conn.close()
    if completed != WARMUP + samples:
        raise RuntimeError(f"{system.label}: pick-up verification failed: {completed} of {WARMUP + samples} completed")
    return {
        "verified_completed": completed,
        **{span: [round(ms, 3) for ms in values] for span, values in spans.items()},
    }


# -- rounds and summary -----------------------------------------------------------------------


@dataclass(frozen=True)
class SideBySideConfig:
    jobs: int = 20_000
    concurrency: tuple[int, ...] = (10, 100)
    rounds: int = 3
    samples: int = 300
    systems: tuple[str, ...] = SYSTEM_KEYS


async def run_side_by_side(url: str, config: SideBySideConfig) -> dict[str, Any]:
    """Every system's workloads in `config.rounds` rounds on the migrated database at `url`."""
    systems, notes = build_systems(list(config.systems))
    if not systems:
        raise ValueError("no system to run")
    if gc.get_freeze_count():
        # the caller froze its start-up heap, as `jobrunner run` does once its handlers are
        # imported: the plugins build_systems imported belong to that heap too
        freeze_startup_heap()
    load_before = [round(x, 2) for x in os.getloadavg()]
    raw: dict[str, dict[str, Any]] = {
        s.key: {"drain": {c: [] for c in config.concurrency}, "pickup": []} for s in systems
    }
    for round_number in range(config.rounds):
        turn = round_number % len(systems)
        order = systems[turn:] + systems[:turn]
        for concurrency in config.concurrency:
            for system in order:
                raw[system.key]["drain"][concurrency].append(await drain_run(url, system, config.jobs, concurrency))
        for system in order:
            raw[system.key]["pickup"].append(await pickup_run(url, system, config.samples))
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            "jobs": config.jobs,
            "concurrency": list(config.concurrency),
            "rounds": config.rounds,
            "pickup_samples_per_round": config.samples,
            "pickup_warmup_left_out": WARMUP,
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        },
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "systems": {s.key: {"label": s.label, "description": s.description} for s in systems},
        "notes": notes,
        "summary": {s.key: summarize(raw[s.key]) for s in systems},
        "paired_ratios": paired_ratios(raw),
        "raw": raw,
    }


async def side_by_side_on(server: str, config: SideBySideConfig) -> dict[str, Any]:
    """run_side_by_side on a fresh database of its own on `server`, dropped afterwards."""
    url = await fresh_database(server, SIDE_DB)
    try:
        return await run_side_by_side(url, config)
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{SIDE_DB}" WITH (FORCE)')
        finally:
            await admin.close()


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds for the drains; percentiles of every round's samples pooled for
    the pick-up."""
    spans: dict[str, list[float]] = {"from_enqueue_call": [], "from_commit": []}
    for run in raw["pickup"]:
        for span, values in spans.items():
            values += run[span]
    return {
        "drain_jobs_per_second": {
            c: round(statistics.median(r["jobs_per_second"] for r in runs)) for c, runs in raw["drain"].items()
        },
        "cpu_us_per_job": {
            c: round(statistics.median(r["worker_cpu_us_per_job"] for r in runs), 1) for c, runs in raw["drain"].items()
        },
        "pickup": {span: latency_summary(values) for span, values in spans.items()},
    }


# the drains' figures compared run by run: (the run's key, the ratios' key)
PAIRED_FIGURES = (("jobs_per_second", "jobs_per_second"), ("worker_cpu_us_per_job", "cpu_us_per_job"))


def paired_ratios(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each system's drain ÷ another's run in the same round, median over the rounds: against the
    bare loop, and "+ 10 limits" and "+ app" against plain jobrunner."""
    pairs = [(key, "bare") for key in raw if key != "bare"] + [("limits", "jobrunner"), ("app", "jobrunner")]
    ratios: dict[str, Any] = {}
    for ours, theirs in pairs:
        if ours not in raw or theirs not in raw:
            continue
        ratios[f"{ours}/{theirs}"] = {
            name: {
                c: round(
                    statistics.median(
                        a[run_key] / b[run_key] for a, b in zip(runs, raw[theirs]["drain"][c], strict=True)
                    ),
                    2,
                )
                for c, runs in raw[ours]["drain"].items()
            }
            for run_key, name in PAIRED_FIGURES
        }
    return ratios


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    label: str
    # the figure of one system's summary (or a peer's, see _peer_value)
    value: Callable[[dict[str, Any]], float | None]
    lower_is_better: bool
    # the paired-ratio entry (ratios[pair][what][c]) when the row is a drain row
    paired: tuple[str, int] | None = None


def _rows(concurrency: list[int]) -> list[_Row]:
    def drain(c: int) -> Callable[[dict[str, Any]], float | None]:
        return lambda s: s["drain_jobs_per_second"].get(c)

    def cpu(c: int) -> Callable[[dict[str, Any]], float | None]:
        return lambda s: s["cpu_us_per_job"].get(c)

    def span(name: str, pct: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda s: (s.get("pickup") or {}).get(name, {}).get(pct)

    rows = [_Row(f"drain c={c} (jobs/s)", drain(c), False, ("jobs_per_second", c)) for c in concurrency]
    rows += [_Row(f"µs CPU/job c={c}, worker", cpu(c), True, ("cpu_us_per_job", c)) for c in concurrency]
    rows += [
        _Row("pick-up p50, call→handler ms", span("from_enqueue_call", "p50_ms"), True),
        _Row("pick-up p99, call→handler ms", span("from_enqueue_call", "p99_ms"), True),
        _Row("pick-up p50, commit→handler ms", span("from_commit", "p50_ms"), True),
        _Row("pick-up p99, commit→handler ms", span("from_commit", "p99_ms"), True),
    ]
    return rows


def _cell(value: float | None, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width},}" if isinstance(value, int) else f"{value:>{width}}"


def _ratio(
    report: dict[str, Any], row: _Row, ours: str, theirs: str, values: dict[str, float | None], width: int
) -> str:
    paired = report["paired_ratios"].get(f"{ours}/{theirs}")
    if row.paired is not None and paired is not None:
        what, c = row.paired
        return f"{paired[what][c]:>{width}.2f}"
    a, b = values.get(ours), values.get(theirs)
    if not a or not b:
        return f"{'-':>{width}}"
    return f"{a / b:>{width}.2f}"


def best_peer(peers: dict[str, dict[str, Any]], row: _Row) -> tuple[str, float] | None:
    """The peer with the best figure in this row: highest throughput, lowest time or CPU."""
    found = [(name, v) for name, summary in peers.items() if (v := row.value(summary)) is not None]
    if not found:
        return None
    return (min if row.lower_is_better else max)(found, key=lambda item: item[1])


LABEL_WIDTH = 31
VALUE_WIDTH = 12
PEER_WIDTH = 26
RATIO_WIDTH = 17


def print_side_by_side(report: dict[str, Any], peers: dict[str, dict[str, Any]] | None = None) -> None:
    """The table: each system's figure, the best peer's (when `peers`, bench.compare's summaries,
    are given), then each ÷ the bare loop; then 0 vs 10 declared limited types."""
    p = report["parameters"]
    load = report["load_average"]
    print(
        f"\nside by side: {p['jobs']:,} no-op jobs per drain, one worker in this process ({p['event_loop']}), "
        f"rounds: {p['rounds']}, each runs every system back to back; pick-up: one job every 10 ms, "
        f"{p['pickup_samples_per_round']} per round; load average {' '.join(map(str, load['before']))} before, "
        f"{' '.join(map(str, load['after']))} after"
    )
    systems = report["systems"]
    summary = report["summary"]
    peers = peers or {}
    keys = [k for k in systems if k != "limits"]
    ratio_keys = [k for k in keys if k != "bare"] if "bare" in systems else []
    header = f"{'':<{LABEL_WIDTH}}" + "".join(f"{systems[k]['label']:>{VALUE_WIDTH}}" for k in keys)
    if peers:
        header += f"{'best peer':>{PEER_WIDTH}}"
    header += "".join(f"{systems[k]['label'] + ' ÷ bare':>{RATIO_WIDTH}}" for k in ratio_keys)
    if peers and ratio_keys:
        header += f"{'peer ÷ bare':>{RATIO_WIDTH}}"
    print(header)
    print("-" * len(header))
    for row in _rows(p["concurrency"]):
        values: dict[str, float | None] = {k: row.value(summary[k]) for k in keys}
        line = f"{row.label:<{LABEL_WIDTH}}" + "".join(_cell(values[k], VALUE_WIDTH) for k in keys)
        best = best_peer(peers, row)
        if peers:
            line += f"{'-':>{PEER_WIDTH}}" if best is None else f"{f'{best[1]:,} ({best[0]})':>{PEER_WIDTH}}"
        line += "".join(_ratio(report, row, k, "bare", values, RATIO_WIDTH) for k in ratio_keys)
        if peers and ratio_keys:
            bare = values.get("bare")
            line += f"{'-':>{RATIO_WIDTH}}" if best is None or not bare else f"{best[1] / bare:>{RATIO_WIDTH}.2f}"
        print(line)
    print(
        "(÷ bare: drains and CPU, the median of each round's ratio; pick-up, the ratio of the percentiles of all "
        "rounds' samples. Above 1 is more jobs/s, more CPU, more ms than the bare loop)"
    )
    if peers:
        print("(best peer: from the peers' own runs in this command, after jobrunner's: its ratio is not paired)")
    if "limits" in systems and "jobrunner" in systems:
        print(f"\nlimited job types declared, no job of them waiting (jobrunner, no plugin): 0 vs {LIMITED_TYPES}")
        print(
            f"{'':<{LABEL_WIDTH}}{'0 types':>{VALUE_WIDTH}}{f'{LIMITED_TYPES} types':>{VALUE_WIDTH}}"
            f"{f'{LIMITED_TYPES} ÷ 0':>{RATIO_WIDTH}}"
        )
        for row in _rows(p["concurrency"]):
            values = {k: row.value(summary[k]) for k in ("jobrunner", "limits")}
            ratio = _ratio(report, row, "limits", "jobrunner", values, RATIO_WIDTH)
            print(
                f"{row.label:<{LABEL_WIDTH}}{_cell(values['jobrunner'], VALUE_WIDTH)}"
                f"{_cell(values['limits'], VALUE_WIDTH)}{ratio}"
            )
    for system in systems.values():
        print(f"  {system['label']}: {system['description']}")
    for note in report["notes"]:
        print(f"  left out: {note}")


# -- main -------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    try:
        report = await side_by_side_on(
            server,
            SideBySideConfig(
                jobs=args.jobs,
                concurrency=tuple(args.concurrency),
                rounds=args.rounds,
                samples=args.samples,
                systems=tuple(args.systems),
            ),
        )
        report["machine"] = await machine_report(server)
        report["gc_frozen_objects"] = gc.get_freeze_count()
        return report
    finally:
        if embedded is not None:
            embedded.stop()


def _list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in _list(s)], default=[10, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300, help="pick-up samples per system per round")
    parser.add_argument("--systems", type=_list, default=list(SYSTEM_KEYS), help=f"a subset of {','.join(SYSTEM_KEYS)}")
    parser.add_argument(
        "--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="as JOBRUNNER_EVENT_LOOP"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/side_by_side.json"))
    args = parser.parse_args()
    unknown = set(args.systems) - set(SYSTEM_KEYS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    configure_logging("json", "info")
    freeze_startup_heap()  # as `jobrunner run` and bench.run do
    report = event_loop.run(main_async(args), args.event_loop)
    print_side_by_side(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
