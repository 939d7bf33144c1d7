"""pgqueuer's enqueue figures for bench/enqueue.py (run with bench/.venv-peers/bin/python).

    bench/.venv-peers/bin/python -m bench.peers.pgqueuer_enqueue --url postgresql://… --install
    bench/.venv-peers/bin/python -m bench.peers.pgqueuer_enqueue --url … --bulk 100000 --batch 1000
    bench/.venv-peers/bin/python -m bench.peers.pgqueuer_enqueue --url … --single 2000

Its documented API on the asyncpg driver: `Queries.enqueue` with lists (one statement per batch)
and with scalars (one statement and one commit per job). The queue is emptied first; the inputs
(entry points, payloads as the JSON bytes pgqueuer takes) are built before the clock starts.
Prints one JSON object: jobs per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, Queries


def payload(i: int) -> bytes:
    # the same payload as bench/enqueue.py gives jobrunner, as pgqueuer takes it: bytes
    return json.dumps({"user_id": i, "image": f"{i}/photo.jpg"}).encode()


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    conn = await asyncpg.connect(args.url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if args.install:
            await queries.install()
            return {}
        await queries.clear_queue()
        if args.bulk:
            batches = [
                (["noop"] * args.batch, [payload(i) for i in range(first, first + args.batch)], [0] * args.batch)
                for first in range(0, args.bulk, args.batch)
            ]
            started = time.perf_counter()
            for entrypoints, payloads, priorities in batches:
                await queries.enqueue(entrypoints, payloads, priorities)
            seconds = time.perf_counter() - started
            return {"bulk_per_second": args.bulk / seconds}
        payloads = [payload(i) for i in range(args.single)]
        started = time.perf_counter()
        for one in payloads:
            await queries.enqueue("noop", one)
        seconds = time.perf_counter() - started
        return {"single_per_second": args.single / seconds}
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the peer's own database")
    parser.add_argument("--install", action="store_true", help="install pgqueuer's schema and exit")
    parser.add_argument("--bulk", type=int, default=0, help="jobs, in batches of --batch")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--single", type=int, default=0, help="jobs, one call each")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(main_async(args))) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
