"""`jobrunner migrate`: apply the migrations, or print them as one script (--sql)."""

from __future__ import annotations

import argparse

from jobrunner.cli.connection import DatabaseUnavailable, connection, with_database
from jobrunner.cli.exit_codes import EXIT_OK, EXIT_USAGE
from jobrunner.cli.output import complain
from jobrunner.display import printable
from jobrunner.dsn import DatabaseUrl
from jobrunner.migrate import Step, migrate, migration_script, plan_for_empty_database, plan_migrations
from jobrunner.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    schema = settings.schema_name
    if args.sql and args.empty:
        return print_migration_script(plan_for_empty_database(schema), schema, "an empty database")

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        if args.sql:
            try:
                async with connection(url, settings) as conn:
                    steps = await plan_migrations(conn, schema)
            except DatabaseUnavailable as exc:
                complain(
                    f"jobrunner: {exc}\nso `migrate --sql` cannot tell what it lacks; "
                    "`jobrunner migrate --sql --empty` prints what an empty database needs"
                )
                return EXIT_USAGE
            return print_migration_script(steps, schema, f"the database {printable(url.redacted())}")
        async with connection(url, settings) as conn:
            applied = await migrate(conn, schema)
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        return EXIT_OK

    return with_database(settings, body)


def print_migration_script(steps: list[Step], schema: str, target: str) -> int:
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


def add_migrate_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
