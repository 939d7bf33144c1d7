"""`jobrunner …`: run, migrate, enqueue, status, retry, cancel, schedules, demo, db."""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
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
from jobrunner.samplers import entry_point_samplers
from jobrunner.settings import Settings, describe_settings_error
from jobrunner.sql_files import Queries

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_CANCEL = 3

CANCEL_EXIT_CODES = f"""exit codes:
  {EXIT_OK}  cancelled (it was pending), or running and its worker told to stop it
  {EXIT_FAILURE}  there is no such job
  {EXIT_USAGE}  usage error: invalid settings, database not migrated, cannot connect
  {EXIT_NOTHING_TO_CANCEL}  nothing to cancel: the job had already ended (completed, failed, dead or cancelled)"""


class DatabaseUnavailable(RuntimeError):
    """The command's connection failed; the message names the server, never the password."""


async def _connect(url: DatabaseUrl, settings: Settings) -> asyncpg.Connection:
    # asyncpg's own messages do not say which server: a typo in a host name read only
    # "Name or service not known"
    try:
        return await asyncpg.connect(**connect_kwargs(url, settings.connect_timeout))
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise DatabaseUnavailable(f"the database at {url.server()} refused the login: {exc}") from exc
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError) as exc:
        reason = str(exc) or (
            f"no answer within {settings.connect_timeout:g}s" if isinstance(exc, TimeoutError) else type(exc).__name__
        )
        raise DatabaseUnavailable(f"cannot connect to the database at {url.server()}: {reason}") from exc


@asynccontextmanager
async def _connection(url: DatabaseUrl, settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await _connect(url, settings)
    try:
        yield conn
    finally:
        await conn.close()


def _with_database(
    settings: Settings, body: Callable[[DatabaseUrl, DatabaseUrl | None], Coroutine[Any, Any, int]]
) -> int:
    with DatabaseTarget(settings) as (url, listen):
        return event_loop.run(body(url, listen), settings.event_loop)


# wider than any table: piped output is never wrapped or cut
_UNWRAPPED_WIDTH = 1_000_000


def _console() -> Console:
    """On a terminal, tables fit its width. Piped or redirected (`jobrunner status | grep`), each
    row stays whole on one line, whatever COLUMNS says: rich would otherwise wrap and cut them at
    COLUMNS, or at 80 columns when it is unset."""
    return Console() if sys.stdout.isatty() else Console(width=_UNWRAPPED_WIDTH)


def _print_json(value: Any) -> None:
    """Job data as JSON: control characters escaped (ensure_ascii), secrets masked."""
    print(redact_text(json.dumps(value, default=str, indent=2)))


# -- commands ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.daemon.daemon import Daemon, NotMigrated

    registry = HandlerRegistry.discover(settings.handler_modules)
    samplers = entry_point_samplers() if settings.plugin_samplers else []
    freeze_startup_heap()

    async def body(url: DatabaseUrl, listen: DatabaseUrl | None) -> int:
        if args.migrate:
            async with _connection(url, settings) as conn:
                await migrate(conn, settings.schema_name)
        daemon = Daemon(settings, registry, url, listen, burst=args.burst, samplers=samplers)
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
            except DatabaseUnavailable as exc:
                _complain(
                    f"jobrunner: {exc}\nso `migrate --sql` cannot tell what it lacks; "
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
    if not isinstance(payload, dict):
        # null too: the client would take None for "no payload" and store {}
        kind = "null" if payload is None else f"a JSON {_json_kind(payload)}"
        print(f"jobrunner: --payload must be a JSON object ({{...}}), not {kind}", file=sys.stderr)
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
                concurrency_key=args.concurrency_key,
                run_at=args.run_at,
            )
        print(job_id)
        return EXIT_OK

    try:
        return _with_database(settings, body)
    except InvalidJob as exc:
        print(f"jobrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "boolean" if isinstance(value, bool) else "number"


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
        console = _console()
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
            # payload, result and progress as the JSON they are stored as ("1" and 1 differ)
            is_json = name in ("payload", "result", "progress") and value is not None
            table.add_row(name, literal(json.dumps(value, ensure_ascii=False) if is_json else value))
        _console().print(table)
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
            row = await conn.fetchrow(Queries(settings.schema_name).cancel_job_reporting, args.job_id)
        return _report_cancel(args.job_id, row)

    return _with_database(settings, body)


def _report_cancel(job_id: int, row: asyncpg.Record | None) -> int:
    """What `cancel` did, from the job's state before and after (see CANCEL_EXIT_CODES)."""
    if row is None:
        print(f"jobrunner: there is no job {job_id}", file=sys.stderr)
        return EXIT_FAILURE
    before, after = row["status_before"], row["status_after"]
    if before == "pending":
        print(f"cancelled job {job_id} (it was pending)")
    elif before == "running" and row["cancel_requested_before"] is not None:
        print(
            f"job {job_id} is running and was already asked to stop at {row['cancel_requested_before']}; "
            "its worker was told again; it will end cancelled"
        )
    elif after == "cancelling":
        print(f"job {job_id} is running: its worker was told to stop it; it will end cancelled")
    else:
        ended = "was already cancelled" if before == "cancelled" else f"has already ended {printable(before)}"
        when = "" if row["finished_at"] is None else f" (at {row['finished_at']})"
        print(f"jobrunner: job {job_id} {ended}{when}: nothing to cancel", file=sys.stderr)
        return EXIT_NOTHING_TO_CANCEL
    return EXIT_OK


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
        _console().print(table_out)
        return EXIT_OK

    return _with_database(settings, body)


# -- the embedded database -----------------------------------------------------------------


def _embedded_only(settings: Settings, command: str) -> bool:
    """False, after saying why, when a database is configured: `db url` and `db reset` concern
    the embedded server only, and must never be taken to act on the configured database."""
    if settings.database_url is None:
        return True
    _complain(
        f"jobrunner: DATABASE_URL (or JOBRUNNER_DATABASE_URL) is set, so jobrunner uses that database, not "
        f"the embedded one; `jobrunner db {command}` concerns the embedded database only and never touches "
        f"a configured one (unset the variable to use the embedded database)"
    )
    return False


def cmd_db_url(_args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedPostgres

    if not _embedded_only(settings, "url"):
        return EXIT_USAGE
    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    url = embedded.start(keep_running=True)
    embedded.stop()  # let go: the mark keeps it running for whoever uses the URL
    print(url)
    _complain(f"jobrunner: the embedded server (data in {embedded.pgdata}) runs until `jobrunner db stop`")
    return EXIT_OK


def cmd_db_path(_args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedPostgres

    print(EmbeddedPostgres(settings.embedded_data_dir).pgdata)
    if settings.database_url is not None:
        _complain("jobrunner: (not in use: DATABASE_URL is set, so jobrunner uses that database)")
    return EXIT_OK


def cmd_db_stop(_args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    was_running = embedded.running_pid() is not None
    others = embedded.stop_server()
    if others:
        _complain(
            f"jobrunner: the embedded server is in use by process(es) {', '.join(map(str, others))}: "
            "it stops when the last of them exits"
        )
        return EXIT_FAILURE
    print(
        f"stopped the embedded server (data in {embedded.pgdata})"
        if was_running
        else "the embedded server was not running"
    )
    return EXIT_OK


def cmd_db_reset(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedInUse, EmbeddedPostgres

    if not _embedded_only(settings, "reset"):
        return EXIT_USAGE
    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    if not args.yes:
        _complain(
            f"jobrunner: this deletes every database of the embedded server ({embedded.pgdata}) and "
            "everything in them; run `jobrunner db reset --yes` to do it"
        )
        return EXIT_USAGE
    try:
        embedded.reset()
    except EmbeddedInUse as exc:
        _complain(f"jobrunner: not reset: {exc}")
        return EXIT_FAILURE
    print(f"reset the embedded server: {embedded.pgdata} holds an empty cluster; `jobrunner migrate` sets it up")
    return EXIT_OK


def add_db_commands(sub: Any) -> None:
    """`jobrunner db url|path|stop|reset`: the embedded database, no longer a black box."""
    db = sub.add_parser(
        "db",
        help="the embedded database: its URL, where it lives, stop, reset",
        description="The embedded PostgreSQL that jobrunner starts when no database is configured (no "
        "DATABASE_URL): a URL for psql and the clients, where its data lives, stopping and resetting it. It "
        "keeps its data under JOBRUNNER_EMBEDDED_DATA_DIR and listens on a Unix socket only, no TCP port.",
    )
    commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    url = commands.add_parser(
        "url",
        help="print a URL for the embedded database, starting it if needed",
        description='Print a postgresql:// URL of the embedded database, for psql (psql "$(jobrunner db url)") '
        "and the clients, starting the server if needed. The server then keeps running until `jobrunner db "
        "stop`. Exit 2 if DATABASE_URL is set.",
    )
    url.set_defaults(func=cmd_db_url)
    path = commands.add_parser(
        "path",
        help="print where the embedded database keeps its data",
        description="Print the embedded server's data directory (its cluster, with its log file).",
    )
    path.set_defaults(func=cmd_db_path)
    stop = commands.add_parser(
        "stop",
        help="stop the embedded server that `db url` keeps running",
        description="Stop the embedded server now, unless jobrunner processes use it: then the last of them "
        "stops it when it exits (exit 1).",
    )
    stop.set_defaults(func=cmd_db_stop)
    reset = commands.add_parser(
        "reset",
        help="delete the embedded database's data and start afresh (--yes)",
        description="Delete every database of the embedded server and create an empty cluster in its place "
        "(stopped; `jobrunner migrate` sets it up again). Needs --yes. Refuses (exit 2) when DATABASE_URL is "
        "set, so a configured database is never touched, and (exit 1) while a jobrunner process uses the server.",
    )
    reset.add_argument("--yes", action="store_true", help="confirm: delete the embedded server's data")
    reset.set_defaults(func=cmd_db_reset)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.demo import run_demo

    # the demo prints its own report; per-job warnings would drown the progress bar
    configure_logging("console", "error")
    return run_demo(settings, jobs=args.jobs, concurrency=args.concurrency)


# -- parsing -------------------------------------------------------------------------------


def _aware_time(text: str) -> datetime:
    """--run-at: an ISO 8601 time that says which zone it is in (a bare local time is ambiguous
    on a server, and the clients refuse naive datetimes)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add one, e.g. {text}+00:00 or {text}Z")
    return moment


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
    parser = argparse.ArgumentParser(prog="jobrunner", description=__doc__)
    parser.add_argument(
        "--version", action=_VersionAction, help="print jobrunner's version and the installed plugins', and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    migrate_parser = sub.add_parser(
        "migrate",
        help="apply database migrations (idempotent)",
        description="Apply the missing migrations and changed function files (the core's, then each plugin's) "
        "in one transaction under an advisory lock, so replicas may run it together; print what was applied. "
        "Fails (exit 2) if an applied migration file was changed.",
    )
    migrate_parser.add_argument(
        "--sql",
        action="store_true",
        help="apply nothing: print what migrate would apply to the database, as one BEGIN; ... COMMIT; script",
    )
    migrate_parser.add_argument(
        "--empty", action="store_true", help="with --sql: the script for an empty database, without connecting"
    )
    migrate_parser.set_defaults(func=cmd_migrate)

    enqueue = sub.add_parser(
        "enqueue",
        help="enqueue one job, print its id",
        description="Enqueue one job and print its id (on a dedupe hit, the id of the live job holding the key). "
        "Exit 2 if the job is invalid.",
    )
    enqueue.add_argument("job_type", help="the job type: the job_type of the handler that runs it")
    enqueue.add_argument(
        "--payload", default="{}", metavar="JSON", help="the job's payload, a JSON object (default {})"
    )
    enqueue.add_argument("--queue", default="default", help="the queue it goes to (default: default)")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first (a 32-bit integer, default 0)")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument(
        "--delay", type=float, default=None, metavar="SECONDS", help="runnable SECONDS from now (default: at once)"
    )
    when.add_argument(
        "--run-at",
        type=_aware_time,
        default=None,
        metavar="TIME",
        help="runnable from TIME, ISO 8601 with a UTC offset (2030-01-31T09:00:00+01:00, or Z for UTC)",
    )
    enqueue.add_argument(
        "--max-attempts", type=int, default=5, metavar="N", help="attempts before it ends dead (1-1000, default 5)"
    )
    enqueue.add_argument(
        "--dedupe-key",
        default=None,
        metavar="KEY",
        help="while a pending or running job holds KEY, enqueue nothing and print that job's id",
    )
    enqueue.add_argument(
        "--concurrency-key",
        default=None,
        metavar="KEY",
        help="group the job with others of its type holding KEY (e.g. a user id) for the type's "
        "per_key_max_running limit",
    )
    enqueue.set_defaults(func=cmd_enqueue)

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

    retry = sub.add_parser(
        "retry",
        help="requeue one failed, dead or cancelled job, or every failed and dead job of a type",
        description="Give jobs a fresh set of attempts, runnable now. Exit 1 if the job is not failed, dead or "
        "cancelled, or if a live job holds the dedupe_key of one of them (then nothing is requeued).",
    )
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?", type=int, help="the failed, dead or cancelled job to requeue")
    target.add_argument(
        "--type", help="requeue every failed and every dead job of TYPE (its cancelled jobs are left alone)"
    )
    retry.set_defaults(func=cmd_retry)

    cancel = sub.add_parser(
        "cancel",
        help="cancel a job (a running one is stopped where it runs)",
        description="Cancel a pending job at once, or ask the worker running a job to stop it\n"
        "(it ends cancelled once its handler has stopped).",
        epilog=CANCEL_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cancel.add_argument("job_id", type=int, help="the job to cancel")
    cancel.set_defaults(func=cmd_cancel)

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

    demo = sub.add_parser(
        "demo",
        help="run a realistic workload on the embedded database and report",
        description="Run the real daemon on a mixed workload with simulated latencies and failures, in its own "
        "schema (jobrunner_demo) of the configured or embedded database, and report throughput and latency.",
    )
    demo.add_argument("--jobs", type=int, default=5000, metavar="N", help="jobs to enqueue and run (default 5000)")
    demo.add_argument("--concurrency", type=int, default=50, metavar="N", help="handlers running at once (default 50)")
    demo.set_defaults(func=cmd_demo)
    add_db_commands(sub)

    from jobrunner.dashboard_command import add_dashboard_command
    from jobrunner.pause_commands import add_pause_commands

    add_pause_commands(sub)
    add_dashboard_command(sub)
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


def _warn_about_unknown_variables(*, as_log: bool) -> None:
    """Name the JOBRUNNER_ variables no setting reads (a mistyped name is otherwise ignored in
    silence): a log line for the daemon, plain lines on stderr for the other commands."""
    import os

    import structlog

    from jobrunner.unknown_settings import dotenv_variables, find_unknown_variables

    findings = find_unknown_variables({"environment": os.environ, ".env file": dotenv_variables()})
    log = structlog.get_logger("jobrunner")
    for problem in findings.unreadable:
        text = f"JOBRUNNER_ variables not checked: a plugin's settings cannot be read: {problem}"
        if as_log:
            log.warning(text)
        else:
            _complain(f"jobrunner: warning: {text}")
    for unknown in findings.unknown:
        if as_log:
            log.warning(unknown.message(), variable=unknown.name, did_you_mean=unknown.suggestion)
        else:
            _complain(f"jobrunner: warning: {unknown.message()}")


# what a statement meets in a database `jobrunner migrate` has not (fully) set up: a missing table,
# a missing function (enqueue_job, cancel_job, or one of an older signature), a missing schema
_NOT_MIGRATED = (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError)


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
    _warn_about_unknown_variables(as_log=args.command == "run")
    try:
        code: int = args.func(args, settings)
    except (RegistryError, InvalidDatabaseUrl, EmbeddedUnavailable, MigrationError, DatabaseUnavailable) as exc:
        _complain(f"jobrunner: {exc}")
        return EXIT_USAGE
    except _NOT_MIGRATED as exc:
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
