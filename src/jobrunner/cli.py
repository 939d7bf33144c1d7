"""`jobrunner …`: run, migrate, enqueue, status, retry, cancel, demo."""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table

from jobrunner import event_loop
from jobrunner.client import AsyncClient
from jobrunner.database import DatabaseTarget, connect_kwargs
from jobrunner.display import literal, printable, status_table
from jobrunner.dsn import DatabaseUrl, InvalidDatabaseUrl
from jobrunner.embedded import EmbeddedUnavailable
from jobrunner.gc_freeze import freeze_startup_heap
from jobrunner.logs import configure_logging
from jobrunner.migrate import (
    MigrationError,
    Step,
    migrate,
    migration_script,
    plan_for_empty_database,
    plan_migrations,
)
from jobrunner.new_job import InvalidJob
from jobrunner.redaction import redact_text, register_environment_secrets, register_settings_secrets
from jobrunner.registry import HandlerRegistry, RegistryError
from jobrunner.settings import Settings, describe_settings_error
from jobrunner.sql_files import Queries

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


@asynccontextmanager
async def _connection(url: DatabaseUrl, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(**connect_kwargs(url, settings.connect_timeout))
    try:
        yield conn
    finally:
        await conn.close()


def _with_database(
    settings: Settings, body: Callable[[DatabaseUrl, DatabaseUrl | None], Coroutine[Any, Any, int]]
) -> int:
    with DatabaseTarget(settings) as (url, listen):
        return event_loop.run(body(url, listen), settings.event_loop)


def _print_json(value: Any) -> None:
    """Job data as JSON: control characters escaped (ensure_ascii), secrets masked."""
    print(redact_text(json.dumps(value, default=str, indent=2)))


# -- commands ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.daemon.daemon import Daemon, NotMigrated

    registry = HandlerRegistry.discover(settings.handler_modules)
    freeze_startup_heap()

    async def body(url: DatabaseUrl, listen: DatabaseUrl | None) -> int:
        if args.migrate:
            async with _connection(url, settings) as conn:
                await migrate(conn, settings.schema_name)
        daemon = Daemon(settings, registry, url, listen, burst=args.burst)
        daemon.install_signal_handlers()
        try:
            await daemon.run()
        except NotMigrated as exc:
            print(f"jobrunner: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK

    return _with_database(settings, body)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    schema = settings.schema_name
    if args.sql and args.empty:
        return _print_migration_script(plan_for_empty_database(schema), schema, "an empty database")

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        if args.sql:
            try:
                async with _connection(url, settings) as conn:
                    steps = await plan_migrations(conn, schema)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError) as exc:
                _complain(
                    f"jobrunner: cannot connect to the database ({exc}), so cannot tell what it lacks; "
                    "`jobrunner migrate --sql --empty` prints what an empty database needs"
                )
                return EXIT_USAGE
            return _print_migration_script(steps, schema, f"the database {printable(url.redacted())}")
        async with _connection(url, settings) as conn:
            applied = await migrate(conn, schema)
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        return EXIT_OK

    return _with_database(settings, body)


def _print_migration_script(steps: list[Step], schema: str, target: str) -> int:
    """What `migrate` would run, as one script to review or apply by hand (psql, Supabase's SQL
    editor, a file of supabase/migrations/): running `migrate` afterwards finds nothing to do."""
    if not steps:
        print(f"-- jobrunner migrate --sql: nothing to apply to {target} (schema {schema}): it is up to date")
        return EXIT_OK
    applied = [step.name for step in steps if step.name is not None]
    print(f"-- jobrunner migrate --sql: what `jobrunner migrate` applies to {target} (schema {schema}):")
    print("\n".join(f"--   {name}" for name in applied))
    print("-- One transaction under the migration lock; run it whole (psql -v ON_ERROR_STOP=1 -f FILE).\n")
    print(migration_script(schema, steps), end="")
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"jobrunner: --payload is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with _connection(url, settings) as conn:
            client = AsyncClient(conn, settings.schema_name)
            job_id = await client.enqueue(
                args.job_type,
                payload,
                queue=args.queue,
                priority=args.priority,
                delay=args.delay,
                max_attempts=args.max_attempts,
                dedupe_key=args.dedupe_key,
            )
        print(job_id)
        return EXIT_OK

    try:
        return _with_database(settings, body)
    except InvalidJob as exc:
        print(f"jobrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    if args.job is not None:
        return _job_status(args, settings)

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        queries = Queries(settings.schema_name)
        async with _connection(url, settings) as conn:
            counts = await conn.fetch(queries.status_counts)
            oldest = await conn.fetch(queries.oldest_runnable)
            dead = await conn.fetch(queries.recent_dead, args.dead)
        if args.json:
            _print_json(
                {
                    "counts": [dict(r) for r in counts],
                    "runnable": [dict(r) for r in oldest],
                    "recent_failures": [dict(r) for r in dead],
                }
            )
            return EXIT_OK
        console = Console()
        console.print(status_table(counts))
        runnable = Table(title="Runnable now")
        for column in ("queue", "jobs", "oldest waiting"):
            runnable.add_column(column)
        for row in oldest:
            runnable.add_row(literal(row["queue"]), str(row["runnable"]), f"{row['age_seconds']:.1f}s")
        console.print(runnable)
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
            console.print(failures)
        return EXIT_OK

    return _with_database(settings, body)


def _job_status(args: argparse.Namespace, settings: Settings) -> int:
    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with _connection(url, settings) as conn:
            record = await AsyncClient(conn, settings.schema_name).get(args.job)
        if record is None:
            print(f"jobrunner: there is no job {args.job}", file=sys.stderr)
            return EXIT_FAILURE
        fields = vars(record)
        if args.json:
            _print_json(fields)
            return EXIT_OK
        table = Table(title=f"Job {record.id}", show_header=False)
        for name, value in fields.items():
            table.add_row(name, literal(value))
        Console().print(table)
        return EXIT_OK

    return _with_database(settings, body)


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        queries = Queries(settings.schema_name)
        async with _connection(url, settings) as conn:
            try:
                if args.job_id is not None:
                    rows = await conn.fetch(queries.retry_job, args.job_id)
                else:
                    rows = await conn.fetch(queries.retry_all_of_type, args.type)
            except asyncpg.UniqueViolationError:
                print(
                    "jobrunner: not requeued: a live job already holds the dedupe_key of "
                    + ("this job" if args.job_id is not None else "one of these jobs")
                    + "; let it finish (or cancel it) first",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            if rows:
                await conn.execute(queries.notify_queues, sorted({r["queue"] for r in rows}))
        if args.job_id is not None and not rows:
            print(f"jobrunner: job {args.job_id} does not exist or is not failed, dead or cancelled", file=sys.stderr)
            return EXIT_FAILURE
        print(f"requeued {len(rows)} job(s)")
        return EXIT_OK

    return _with_database(settings, body)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with _connection(url, settings) as conn:
            status = await AsyncClient(conn, settings.schema_name).cancel(args.job_id)
        if status is None:
            print(f"jobrunner: there is no job {args.job_id}", file=sys.stderr)
            return EXIT_FAILURE
        if status == "cancelled":
            print(f"cancelled job {args.job_id}")
        elif status == "cancelling":
            print(f"job {args.job_id} is running: its worker was told to stop it; it will end cancelled")
        else:
            print(f"jobrunner: job {args.job_id} was not cancelled: it is already {status}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK

    return _with_database(settings, body)


def cmd_schedules(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from jobrunner.schedules import ScheduleError, ScheduleTable, declared_schedules

    try:
        declared = declared_schedules(settings)
    except ScheduleError as exc:
        print(f"jobrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with _connection(url, settings) as conn:
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
            _print_json(listed)
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
        Console().print(table_out)
        return EXIT_OK

    return _with_database(settings, body)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.demo import run_demo

    # the demo prints its own report; per-job warnings would drown the progress bar
    configure_logging("console", "error")
    return run_demo(settings, jobs=args.jobs, concurrency=args.concurrency)


# -- parsing -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobrunner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--concurrency", type=int, help="handlers running at once (JOBRUNNER_CONCURRENCY)")
    run.add_argument("--queues", help="comma-separated queues to work (JOBRUNNER_QUEUES)")
    run.add_argument(
        "--handlers", action="append", default=[], metavar="MODULE", help="also load handlers from MODULE (repeatable)"
    )
    run.add_argument("--burst", action="store_true", help="exit 0 once no runnable job is left")
    run.add_argument("--poll-interval", type=float, help="seconds between polls (JOBRUNNER_POLL_INTERVAL)")
    run.add_argument("--no-listen", action="store_true", help="poll only, no LISTEN/NOTIFY")
    run.add_argument("--migrate", action="store_true", help="apply migrations before starting")
    run.set_defaults(func=cmd_run)

    migrate_parser = sub.add_parser("migrate", help="apply database migrations (idempotent)")
    migrate_parser.add_argument(
        "--sql", action="store_true", help="print the SQL that migrate would apply, apply nothing"
    )
    migrate_parser.add_argument(
        "--empty", action="store_true", help="with --sql: for an empty database, without connecting"
    )
    migrate_parser.set_defaults(func=cmd_migrate)

    enqueue = sub.add_parser("enqueue", help="enqueue one job, print its id")
    enqueue.add_argument("job_type")
    enqueue.add_argument("--payload", default="{}", help="JSON object")
    enqueue.add_argument("--queue", default="default")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first")
    enqueue.add_argument("--delay", type=float, default=None, help="seconds from now")
    enqueue.add_argument("--max-attempts", type=int, default=5)
    enqueue.add_argument("--dedupe-key", default=None)
    enqueue.set_defaults(func=cmd_enqueue)

    status = sub.add_parser("status", help="jobs by type and status, oldest runnable, recent failures")
    status.add_argument("--json", action="store_true")
    status.add_argument("--dead", type=int, default=10, help="how many recent failures to list")
    status.add_argument("--job", type=int, metavar="ID", help="show one job: status, progress, result, errors")
    status.set_defaults(func=cmd_status)

    retry = sub.add_parser("retry", help="requeue a failed/dead job, or all dead jobs of a type")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?", type=int)
    target.add_argument("--type", help="requeue every failed or dead job of this type")
    retry.set_defaults(func=cmd_retry)

    cancel = sub.add_parser("cancel", help="cancel a job (a running one is stopped where it runs)")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(func=cmd_cancel)

    schedules = sub.add_parser("schedules", help="cron schedules with their last and next run")
    schedules.add_argument("--json", action="store_true")
    schedules.add_argument("--remove", metavar="NAME", help="delete a schedule no replica declares any more")
    schedules.set_defaults(func=cmd_schedules)

    demo = sub.add_parser("demo", help="run a realistic workload on the embedded database and report")
    demo.add_argument("--jobs", type=int, default=5000)
    demo.add_argument("--concurrency", type=int, default=50)
    demo.set_defaults(func=cmd_demo)
    return parser


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "concurrency", None) is not None and args.command == "run":
        overrides["concurrency"] = args.concurrency
    if getattr(args, "queues", None):
        overrides["queues"] = args.queues
    if getattr(args, "poll_interval", None) is not None:
        overrides["poll_interval"] = args.poll_interval
    if getattr(args, "no_listen", False):
        overrides["listen"] = False
    settings = Settings(**overrides)
    if getattr(args, "handlers", None):
        settings = settings.model_copy(update={"handler_modules": [*settings.handler_modules, *args.handlers]})
    return settings


def _complain(message: str) -> None:
    """An error on stderr, with secrets masked and control characters written out."""
    print("\n".join(printable(line) for line in redact_text(message).splitlines()), file=sys.stderr)


def _redacting_excepthook(kind: type[BaseException], value: BaseException, trace: types.TracebackType | None) -> None:
    """A crash's traceback, with secrets masked: a URL or a key may be in any message."""
    sys.stderr.write(redact_text("".join(traceback.format_exception(kind, value, trace))))


def main(argv: list[str] | None = None) -> int:
    sys.excepthook = _redacting_excepthook
    register_environment_secrets()
    args = build_parser().parse_args(argv)
    try:
        settings = _settings_from(args)
    except ValidationError as exc:
        _complain(f"jobrunner: invalid settings:\n{describe_settings_error(exc)}")
        return EXIT_USAGE
    except SettingsError as exc:  # e.g. JSON that does not parse in JOBRUNNER_LIMITS
        field = re.search(r'field "(\w+)"', str(exc))
        variable = f"JOBRUNNER_{field.group(1).upper()}: " if field else ""
        _complain(f"jobrunner: invalid settings: {variable}{exc} (values given as JSON must parse)")
        return EXIT_USAGE
    register_settings_secrets(settings)
    configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = args.func(args, settings)
    except (RegistryError, InvalidDatabaseUrl, EmbeddedUnavailable, MigrationError) as exc:
        _complain(f"jobrunner: {exc}")
        return EXIT_USAGE
    except asyncpg.UndefinedTableError as exc:
        _complain(f"jobrunner: the database is not migrated ({exc}); run `jobrunner migrate` first")
        return EXIT_USAGE
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError) as exc:
        _complain(f"jobrunner: cannot connect to the database: {exc}")
        return EXIT_USAGE
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        _complain(f"jobrunner: the database refused the login: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
