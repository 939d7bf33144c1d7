"""Attacks on the operations endpoint of a real daemon process: flooding /readyz and /metrics
while it drains, and job types/queues chosen by whoever can INSERT a row, made into labels."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import jobrunner_process, wait_for, wait_until

RUN = ("run", "--handlers", "tests.process_handlers")


class DaemonProcess:
    """`jobrunner run` as a child, its JSON log in a file; the port its endpoint listens on."""

    def __init__(self, db_url: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = jobrunner_process(db_url, *RUN, env=env, stdout=out, stderr=subprocess.STDOUT)

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                found.append(event)
        return found

    async def port(self) -> int:
        def listening() -> bool:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            return "metrics/health endpoint listening" in self.log.read_text(errors="replace")

        await wait_until(listening, timeout=30, what="the ops endpoint")
        event = next(e for e in self.events() if e.get("event") == "metrics/health endpoint listening")
        return int(event["port"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()


async def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh loopback connection, the way a probe or scraper asks."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            response = await reader.read()
        finally:
            writer.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, response.partition(b"\r\n\r\n")[2]


async def drain_seconds(conn: asyncpg.Connection, jobs: int) -> float:
    """Enqueue `jobs` no-op jobs in one statement; seconds until the daemon finished them all."""
    started = time.perf_counter()
    await conn.execute("INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, $1)", jobs)
    await wait_for(conn, "SELECT count(*) = 0 FROM background_jobs WHERE status <> 'completed'", timeout=60)
    seconds = time.perf_counter() - started
    await conn.execute("DELETE FROM background_jobs")
    return seconds


# M clients, each asking back to back on fresh connections, until stdin closes (or a minute
# passed); then the count of answers by status (0: refused) on stdout. At the lowest CPU
# priority: what the test measures is what the requests cost the daemon, not what the clients
# cost the machine (the database and the daemon share its cores with them).
FLOOD = r"""
import asyncio, collections, json, os, sys, time
os.nice(19)
port, clients = int(sys.argv[1]), int(sys.argv[2])
answered = collections.Counter()

async def client(path, done):
    while not done.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            answered[int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0] += 1
        except OSError:
            answered[0] += 1
        if answered.total() == clients:
            print("flooding", flush=True)

async def main():
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(60, done.set)
    loop.add_reader(sys.stdin, lambda: sys.stdin.read() or done.set())
    await asyncio.gather(*(client("/readyz" if i % 2 else "/metrics", done) for i in range(clients)))
    print(json.dumps(answered))

asyncio.run(main())
"""


async def test_flooding_readyz_and_metrics_does_not_slow_the_drain(
    db_url: str, conn: asyncpg.Connection, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    jobs, clients = 3_000, 50
    daemon = DaemonProcess(db_url, tmp_path / "daemon.log")
    daemons.append(daemon)
    port = await daemon.port()
    await drain_seconds(conn, 500)  # warm-up: connections, prefetch depth
    answered: Counter[int] = Counter()

    async def flooded_drain() -> float:
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD, str(port), str(clients), stdin=PIPE, stdout=PIPE
        )
        try:
            assert flood.stdout is not None
            assert await asyncio.wait_for(flood.stdout.readline(), 20) == b"flooding\n"
            return await drain_seconds(conn, jobs)
        finally:
            out, _ = await asyncio.wait_for(flood.communicate(b""), 30)
            answered.update({int(status): count for status, count in json.loads(out).items()})

    # the best of two each, interleaved: other processes on the machine only ever add time
    quiet = [await drain_seconds(conn, jobs)]
    loaded = [await flooded_drain()]
    quiet.append(await drain_seconds(conn, jobs))
    loaded.append(await flooded_drain())
    # every client was answered in each flood (the flood says so before each drain starts)
    assert answered[200] >= 2 * clients and answered.keys() == {200}, answered
    assert min(loaded) <= 2 * min(quiet), f"drains took {loaded} s under the flood, {quiet} s without"


async def test_readyz_asks_the_database_nothing_per_request(
    db_url: str, conn: asyncpg.Connection, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    daemon = DaemonProcess(db_url, tmp_path / "daemon.log", env={"JOBRUNNER_READINESS_INTERVAL": "0.2"})
    daemons.append(daemon)
    port = await daemon.port()
    started = time.monotonic()
    while (await get(port, "/readyz"))[0] != 200:
        assert time.monotonic() - started < 20, "never ready"
        await asyncio.sleep(0.05)
    # every readiness query reads jobrunner_migrations: with it locked, a query per request
    # would queue behind the lock (and take the daemon's connections with it)
    waiting_on_lock = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND wait_event_type = 'Lock'"
    )
    async with conn.transaction():
        await conn.execute("LOCK TABLE jobrunner_migrations IN ACCESS EXCLUSIVE MODE")
        for _round in range(5):  # 20 at a time: under JOBRUNNER_HTTP_MAX_CONNECTIONS
            answers = await asyncio.gather(*(get(port, "/readyz", timeout=1.5) for _ in range(20)))
            assert {status for status, _ in answers} <= {200, 503}
        # at most the probe's own connection waits on the lock, never one per request
        assert await conn.fetchval(waiting_on_lock) <= 1
        # and the daemon still works meanwhile: the claim/complete connections are its own
        job_id = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('noop') RETURNING id")
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed")


def accepted_connections(pid: int, port: int) -> int:
    """Established TCP connections on `port` that process `pid` holds a descriptor of (those
    still waiting in the kernel's listen queue belong to nobody yet)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                    held += 1
    return held


async def test_idle_connections_neither_pile_up_nor_lock_out_a_probe(
    db_url: str, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    limit = 8
    daemon = DaemonProcess(db_url, tmp_path / "daemon.log", env={"JOBRUNNER_HTTP_MAX_CONNECTIONS": str(limit)})
    daemons.append(daemon)
    port = await daemon.port()
    # connections that never send a request (a slowloris), five times the limit; each is
    # dropped for a newer one after idling http_server.IDLE_GRACE, so the probe's turn comes
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5 * limit)]
    most = 0
    answered = asyncio.create_task(get(port, "/healthz", timeout=15))
    try:
        while not answered.done():
            most = max(most, accepted_connections(daemon.proc.pid, port))
            await asyncio.sleep(0.01)
        assert answered.result()[0] == 200
    finally:
        for _reader, writer in idle:
            writer.close()
    # the descriptors the endpoint holds stay bounded (they are the database connections' too)
    assert most <= limit + 1, f"the daemon held {most} connections of the endpoint at once"


async def test_junk_job_types_and_queues_do_not_become_metric_labels(
    db_url: str, conn: asyncpg.Connection, daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    junk_types = 20_000
    await conn.execute(
        "INSERT INTO background_jobs (job_type, max_attempts)"
        " SELECT 'junk_type_' || i, 1 FROM generate_series(1, $1) i",
        junk_types,
    )
    # jobs in queues no daemon works: waiting, and running under an expired lease (rescued dead)
    await conn.execute(
        "INSERT INTO background_jobs (job_type, queue) SELECT 'junk_waiting_' || i, 'junk_queue_' || i"
        " FROM generate_series(1, 50) i;"
        "INSERT INTO background_jobs (job_type, queue, status, attempts, max_attempts, worker_id, started_at,"
        " lease_expires_at) SELECT 'junk_rescued_' || i, 'junk_lost_' || i, 'running', 1, 1, 'gone',"
        " now() - interval '1 minute', now() - interval '1 second' FROM generate_series(1, 50) i"
    )
    daemon = DaemonProcess(
        db_url,
        tmp_path / "daemon.log",
        env={"JOBRUNNER_SAMPLE_INTERVAL": "0.2", "JOBRUNNER_CONCURRENCY": "200", "JOBRUNNER_BATCH_SIZE": "500"},
    )
    daemons.append(daemon)
    port = await daemon.port()
    # nothing left to do in the daemon's queue, nothing running anywhere
    await wait_for(
        conn,
        "SELECT count(*) FROM background_jobs WHERE status = 'running' OR (status = 'pending' AND queue = 'default')",
        expect=0,
        timeout=90,
    )
    outcomes = await conn.fetch(
        "SELECT job_type LIKE 'junk_type_%' AS junk_type, status, last_error LIKE 'unknown job_type%' AS unknown,"
        " count(*) FROM background_jobs GROUP BY 1, 2, 3"
    )
    assert {tuple(row) for row in outcomes} == {
        (True, "failed", True, junk_types),
        (False, "pending", None, 50),
        (False, "dead", False, 50),
    }

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

        async def settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            response = await http.get("/metrics")
            assert response.status_code == 200
            assert len(response.content) < 200_000, f"/metrics is {len(response.content)} bytes"
            return {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
            }

        unknown = frozenset({("job_type", "__unknown__"), ("queue", "default"), ("outcome", "failed")})
        rescued = frozenset({("job_type", "__unknown__"), ("queue", "__other__"), ("outcome", "dead")})
        deadline = time.monotonic() + 20
        while True:
            samples = await settled()
            counted = (
                samples.get(("jobrunner_jobs_finished_total", unknown)),
                samples.get(("jobrunner_jobs_finished_total", rescued)),
            )
            sampled = samples.get(("jobrunner_queue_jobs", frozenset({("queue", "__other__"), ("status", "pending")})))
            if counted == (junk_types, 50) and sampled == 50:
                break
            assert time.monotonic() < deadline, (counted, sampled)
            await asyncio.sleep(0.2)
    assert len(samples) < 1_000
    labels = {value for _name, pairs in samples for _label, value in pairs}
    assert not [value for value in labels if value.startswith("junk")]
