"""`jobrunner run`: the daemon. Its modules are imported when the command runs, not when the
parser is built."""

from __future__ import annotations

import argparse
import sys

from jobrunner.cli.connection import connection, with_database
from jobrunner.cli.exit_codes import EXIT_OK, EXIT_USAGE
from jobrunner.dsn import DatabaseUrl
from jobrunner.gc_freeze import freeze_startup_heap
from jobrunner.migrate import migrate
from jobrunner.registry import HandlerRegistry
from jobrunner.samplers import entry_point_samplers
from jobrunner.settings import Settings


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.daemon.daemon import Daemon, NotMigrated

    registry = HandlerRegistry.discover(settings.handler_modules)
    samplers = entry_point_samplers() if settings.plugin_samplers else []
    freeze_startup_heap()

    async def body(url: DatabaseUrl, listen: DatabaseUrl | None) -> int:
        if args.migrate:
            async with connection(url, settings) as conn:
                await migrate(conn, settings.schema_name)
        daemon = Daemon(settings, registry, url, listen, burst=args.burst, samplers=samplers)
        daemon.install_signal_handlers()
        try:
            await daemon.run()
        except NotMigrated as exc:
            print(f"jobrunner: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK

    return with_database(settings, body)


def add_run_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon: claim the runnable jobs of its queues and run their handlers until "
        "SIGTERM or SIGINT, then let running jobs finish for JOBRUNNER_SHUTDOWN_GRACE. Handlers come from "
        "the installed plugins (jobrunner.handlers entry points) and --handlers. Refuses to start (exit 2) "
        "while migrations are missing.",
    )
    run.add_argument(
        "--concurrency", type=int, metavar="N", help="handlers running at once (JOBRUNNER_CONCURRENCY, default 10)"
    )
    run.add_argument(
        "--queues", metavar="Q1,Q2", help="comma-separated queues to work (JOBRUNNER_QUEUES, default: default)"
    )
    run.add_argument(
        "--handlers",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load the handlers defined in the Python module MODULE (repeatable; JOBRUNNER_HANDLER_MODULES)",
    )
    run.add_argument(
        "--burst",
        action="store_true",
        help="exit 0 once no job is runnable and this daemon's jobs are settled (jobs scheduled later are not "
        "waited for, beyond JOBRUNNER_BURST_WAIT)",
    )
    run.add_argument(
        "--poll-interval", type=float, metavar="SECONDS", help="seconds between polls (JOBRUNNER_POLL_INTERVAL, 1)"
    )
    run.add_argument(
        "--no-listen", action="store_true", help="poll only, no LISTEN/NOTIFY wake-ups (JOBRUNNER_LISTEN=false)"
    )
    run.add_argument("--migrate", action="store_true", help="apply the missing migrations first, as `migrate` does")
    run.set_defaults(func=cmd_run)
