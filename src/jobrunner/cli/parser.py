"""The `jobrunner` command's parser: every command registers its own (one module each)."""

from __future__ import annotations

import argparse
from typing import Any

from jobrunner.cli.dashboard import add_dashboard_command
from jobrunner.cli.demo import add_demo_command
from jobrunner.cli.embedded import add_db_commands
from jobrunner.cli.enqueue import add_enqueue_command
from jobrunner.cli.manage import add_manage_commands
from jobrunner.cli.migrate import add_migrate_command
from jobrunner.cli.pause import add_pause_commands
from jobrunner.cli.run import add_run_command
from jobrunner.cli.schedules import add_schedules_command
from jobrunner.cli.status import add_status_command

DESCRIPTION = "`jobrunner …`: run, migrate, enqueue, status, retry, cancel, schedules, demo, db."

# the entry-point groups through which a plugin adds to jobrunner
_PLUGIN_GROUPS = ("jobrunner.handlers", "jobrunner.migrations", "jobrunner.schedules", "jobrunner.settings")


def version_report() -> str:
    """`jobrunner X.Y.Z` from the installed distribution's metadata, then one line per installed
    plugin distribution (what a bug report needs); read only when asked for."""
    from importlib.metadata import entry_points, version

    lines = [f"jobrunner {version('jobrunner')}"]
    plugins: set[tuple[str, str]] = set()
    for group in _PLUGIN_GROUPS:
        for point in entry_points(group=group):
            if point.dist is not None:
                plugins.add((point.dist.name, point.dist.version))
    lines += [f"plugin {name} {plugin_version}" for name, plugin_version in sorted(plugins)]
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        print(version_report())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobrunner", description=DESCRIPTION)
    parser.add_argument(
        "--version", action=_VersionAction, help="print jobrunner's version and the installed plugins', and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # in this order in `jobrunner --help`
    add_run_command(sub)
    add_migrate_command(sub)
    add_enqueue_command(sub)
    add_status_command(sub)
    add_manage_commands(sub)
    add_schedules_command(sub)
    add_demo_command(sub)
    add_db_commands(sub)
    add_pause_commands(sub)
    add_dashboard_command(sub)
    return parser
