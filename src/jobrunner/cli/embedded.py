"""`jobrunner db url|path|stop|reset`: the embedded database. jobrunner.embedded is imported
when a command runs."""

from __future__ import annotations

import argparse

from jobrunner.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from jobrunner.cli.output import complain
from jobrunner.settings import Settings


def embedded_only(settings: Settings, command: str) -> bool:
    """False, after saying why, when a database is configured: `db url` and `db reset` concern
    the embedded server only, and must never be taken to act on the configured database."""
    if settings.database_url is None:
        return True
    complain(
        f"jobrunner: DATABASE_URL (or JOBRUNNER_DATABASE_URL) is set, so jobrunner uses that database, not "
        f"the embedded one; `jobrunner db {command}` concerns the embedded database only and never touches "
        f"a configured one (unset the variable to use the embedded database)"
    )
    return False


def cmd_db_url(_args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedPostgres

    if not embedded_only(settings, "url"):
        return EXIT_USAGE
    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    url = embedded.start(keep_running=True)
    embedded.stop()  # let go: the mark keeps it running for whoever uses the URL
    print(url)
    complain(f"jobrunner: the embedded server (data in {embedded.pgdata}) runs until `jobrunner db stop`")
    return EXIT_OK


def cmd_db_path(_args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedPostgres

    print(EmbeddedPostgres(settings.embedded_data_dir).pgdata)
    if settings.database_url is not None:
        complain("jobrunner: (not in use: DATABASE_URL is set, so jobrunner uses that database)")
    return EXIT_OK


def cmd_db_stop(_args: argparse.Namespace, settings: Settings) -> int:
    from jobrunner.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    was_running = embedded.running_pid() is not None
    others = embedded.stop_server()
    if others:
        complain(
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

    if not embedded_only(settings, "reset"):
        return EXIT_USAGE
    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    if not args.yes:
        complain(
            f"jobrunner: this deletes every database of the embedded server ({embedded.pgdata}) and "
            "everything in them; run `jobrunner db reset --yes` to do it"
        )
        return EXIT_USAGE
    try:
        embedded.reset()
    except EmbeddedInUse as exc:
        complain(f"jobrunner: not reset: {exc}")
        return EXIT_FAILURE
    print(f"reset the embedded server: {embedded.pgdata} holds an empty cluster; `jobrunner migrate` sets it up")
    return EXIT_OK


def add_db_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
