"""`jobrunner status`: jobs by type and status, the oldest runnable, recent failures; or one job."""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from jobrunner.cli.connection import connection, with_database
from jobrunner.cli.exit_codes import EXIT_FAILURE, EXIT_OK
from jobrunner.cli.output import console, print_json
from jobrunner.display import literal, status_table
from jobrunner.dsn import DatabaseUrl
from jobrunner.flow_display import flow_parents_line, flow_table, job_flow
from jobrunner.job_statements import JobStatements
from jobrunner.settings import Settings
from jobrunner.statements import run


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    if args.job is not None:
        return job_status(args, settings)

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        statements = JobStatements(settings.schema_name)
        async with connection(url, settings) as conn:
            counts = await run(conn, statements.status_counts())
            oldest = await run(conn, statements.oldest_runnable())
            dead = await run(conn, statements.recent_dead(args.dead))
        if args.json:
            print_json(
                {
                    "counts": [dict(r) for r in counts],
                    "runnable": [dict(r) for r in oldest],
                    "recent_failures": [dict(r) for r in dead],
                }
            )
            return EXIT_OK
        out = console()
        out.print(status_table(counts))
        runnable = Table(title="Runnable now")
        for column in ("queue", "jobs", "oldest waiting"):
            runnable.add_column(column)
        for row in oldest:
            runnable.add_row(literal(row["queue"]), str(row["runnable"]), f"{row['age_seconds']:.1f}s")
        out.print(runnable)
        if dead:
            failures = Table(title="Recent failed and dead jobs")
            for column in ("id", "job_type", "status", "attempts", "finished", "last error"):
                failures.add_column(column)
            for row in dead:
                failures.add_row(
                    str(row["id"]),
                    literal(row["job_type"]),
                    literal(row["status"]),
                    str(row["attempts"]),
                    str(row["finished_at"]),
                    literal((row["last_error"] or "")[:120]),
                )
            out.print(failures)
        return EXIT_OK

    return with_database(settings, body)


def job_status(args: argparse.Namespace, settings: Settings) -> int:
    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        statements = JobStatements(settings.schema_name)
        async with connection(url, settings) as conn:
            record = await run(conn, statements.get_job(args.job))
            flow = await job_flow(conn, statements, record) if record is not None else None
        if record is None:
            print(f"jobrunner: there is no job {args.job}", file=sys.stderr)
            return EXIT_FAILURE
        fields = vars(record)
        if args.json:
            print_json({**fields, "flow": flow} if flow is not None else fields)
            return EXIT_OK
        table = Table(title=f"Job {record.id}", show_header=False)
        for name, value in fields.items():
            if name == "depends_on" and value is not None:
                value = flow_parents_line(value)
            # payload, result and progress as the JSON they are stored as ("1" and 1 differ)
            is_json = name in ("payload", "result", "progress") and value is not None
            table.add_row(name, literal(json.dumps(value, ensure_ascii=False) if is_json else value))
        out = console()
        out.print(table)
        if flow is not None:
            out.print(flow_table(flow))
        return EXIT_OK

    return with_database(settings, body)


def add_status_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status",
        help="jobs by type and status, oldest runnable, recent failures",
        description="Jobs counted by type and status, the oldest runnable job of each queue, and the latest "
        "failed and dead jobs; or, with --job, one job. Exit 1 if --job names no job.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.add_argument(
        "--dead", type=int, default=10, metavar="N", help="how many of the latest failed and dead jobs to list (10)"
    )
    status.add_argument("--job", type=int, metavar="ID", help="show one job: status, progress, result, errors")
    status.set_defaults(func=cmd_status)
