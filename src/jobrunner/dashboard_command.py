"""`jobrunner dashboard`: registered here, so that the CLI imports the web stack (the
`jobrunner[dashboard]` extra) only when the command runs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobrunner.settings import Settings

EXIT_USAGE = 2


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from jobrunner.dashboard.serve import run_dashboard
    except ImportError as exc:
        print(
            f"jobrunner: the dashboard needs its extra ({exc.name} is missing): pip install 'jobrunner[dashboard]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run_dashboard(settings, args.host, args.port)


def add_dashboard_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = sub.add_parser(
        "dashboard",
        help="serve the web dashboard (jobrunner[dashboard])",
        description="Serve the operator's web dashboard until SIGTERM or SIGINT, with the settings every command "
        "uses (the embedded database included); print its address once it listens. Refuses to listen on an "
        "address that is not loopback unless JOBRUNNER_DASHBOARD_USERS or a token is set.",
    )
    dashboard.add_argument("--host", help="bind address (JOBRUNNER_DASHBOARD_HOST, default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, help="port (JOBRUNNER_DASHBOARD_PORT, default 9180; 0 picks one)")
    dashboard.set_defaults(func=cmd_dashboard)
