"""`jobrunner demo` (jobrunner.demo, imported when it runs)."""

from __future__ import annotations

import argparse

from jobrunner.logs import configure_logging
from jobrunner.settings import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.demo import run_demo

    # the demo prints its own report; per-job warnings would drown the progress bar
    configure_logging("console", "error")
    return run_demo(settings, jobs=args.jobs, concurrency=args.concurrency)


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run a realistic workload on the embedded database and report",
        description="Run the real daemon on a mixed workload with simulated latencies and failures, in its own "
        "schema (jobrunner_demo) of the configured or embedded database, and report throughput and latency.",
    )
    demo.add_argument("--jobs", type=int, default=5000, metavar="N", help="jobs to enqueue and run (default 5000)")
    demo.add_argument("--concurrency", type=int, default=50, metavar="N", help="handlers running at once (default 50)")
    demo.set_defaults(func=cmd_demo)
