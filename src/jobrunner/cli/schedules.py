"""`jobrunner schedules`: the cron schedules with their last and next run, or remove one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from jobrunner.cli.connection import connection, with_database
from jobrunner.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from jobrunner.cli.output import console, print_json
from jobrunner.display import literal, printable
from jobrunner.dsn import DatabaseUrl
from jobrunner.settings import Settings


def cmd_schedules(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from jobrunner.schedules import ScheduleError, ScheduleTable, declared_schedules

    try:
        declared = declared_schedules(settings)
    except ScheduleError as exc:
        print(f"jobrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with connection(url, settings) as conn:
            table = ScheduleTable(conn, settings.schema_name)
            if args.remove:
                if not await table.remove(args.remove):
                    print(f"jobrunner: no schedule named {args.remove!r}", file=sys.stderr)
                    return EXIT_FAILURE
                print(f"removed schedule {args.remove} (a replica declaring it writes it back when it starts)")
                return EXIT_OK
            now, rows = await table.rows()
        grace = timedelta(seconds=settings.schedule_misfire_grace)
        listed: list[dict[str, Any]] = []
        for row in rows:
            try:
                schedule = row.schedule()
            except ValidationError as exc:
                print(
                    printable(f"jobrunner: schedule {row.name!r} in the database cannot be read: {exc}"),
                    file=sys.stderr,
                )
                continue
            due = schedule.due(row.handled_until, now, grace)
            mine = declared.get(row.name)
            listed.append(
                {
                    "name": row.name,
                    **schedule.definition(),
                    "last_tick": row.last_tick,
                    "last_run_at": row.last_fired_at,
                    "last_job_id": row.last_job_id,
                    # a due tick fires at the next check of any running daemon
                    "next_run": due.tick if due else schedule.next_tick(now),
                    "due_now": due is not None,
                    "declared_here": "differs" if mine is not None and mine != schedule else mine is not None,
                }
            )
        for name in sorted(declared.keys() - {row.name for row in rows}):
            schedule = declared[name]
            listed.append(
                {
                    "name": name,
                    **schedule.definition(),
                    "last_tick": None,
                    "last_run_at": None,
                    "last_job_id": None,
                    "next_run": schedule.next_tick(now),  # counted from when a daemon registers it
                    "due_now": False,
                    "declared_here": "not registered yet",
                }
            )
        if args.json:
            print_json(listed)
            return EXIT_OK
        table_out = Table(title="Cron schedules")
        for column in ("name", "cron", "timezone", "job_type", "queue", "missed", "last run", "job", "next run"):
            table_out.add_column(column)
        for item in listed:
            last = "never" if item["last_tick"] is None else f"{item['last_tick']:%Y-%m-%d %H:%M %Z}"
            next_run = f"{item['next_run']:%Y-%m-%d %H:%M %Z}" + (" (due now)" if item["due_now"] else "")
            name = item["name"]
            if item["declared_here"] == "differs":
                name += " (declared differently here)"
            elif item["declared_here"] == "not registered yet":
                name += " (not registered yet)"
            table_out.add_row(
                literal(name),
                literal(item["cron"]),
                literal(item["timezone"]),
                literal(item["job_type"]),
                literal(item["queue"]),
                literal(item["missed"]),
                last,
                "" if item["last_job_id"] is None else str(item["last_job_id"]),
                next_run,
            )
        console().print(table_out)
        return EXIT_OK

    return with_database(settings, body)


def add_schedules_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedules = sub.add_parser(
        "schedules",
        help="cron schedules with their last and next run",
        description="The cron schedules in the database and those declared here (settings, plugins), with "
        "their last and next run.",
    )
    schedules.add_argument("--json", action="store_true", help="print JSON instead of a table")
    schedules.add_argument(
        "--remove", metavar="NAME", help="delete the schedule NAME, which no replica declares any more (exit 1 if none)"
    )
    schedules.set_defaults(func=cmd_schedules)
