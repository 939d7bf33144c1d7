"""`jobrunner`'s entry point: settings from the environment and the options, logging, then the
command; the errors every command may meet become one line and exit code 2."""

from __future__ import annotations

import argparse
import re
import sys
import traceback
import types
from typing import Any

import asyncpg
from pydantic import ValidationError
from pydantic_settings import SettingsError

from jobrunner.cli.connection import DatabaseUnavailable
from jobrunner.cli.exit_codes import EXIT_USAGE
from jobrunner.cli.output import complain
from jobrunner.cli.parser import build_parser
from jobrunner.dsn import InvalidDatabaseUrl
from jobrunner.embedded import EmbeddedUnavailable
from jobrunner.logs import configure_logging
from jobrunner.migrate import MigrationError
from jobrunner.redaction import redact_text, register_environment_secrets, register_settings_secrets
from jobrunner.registry import RegistryError
from jobrunner.settings import Settings, describe_settings_error


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
            complain(f"jobrunner: warning: {text}")
    for unknown in findings.unknown:
        if as_log:
            log.warning(unknown.message(), variable=unknown.name, did_you_mean=unknown.suggestion)
        else:
            complain(f"jobrunner: warning: {unknown.message()}")


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
        complain(f"jobrunner: invalid settings:\n{describe_settings_error(exc)}")
        return EXIT_USAGE
    except SettingsError as exc:  # e.g. JSON that does not parse in JOBRUNNER_LIMITS
        field = re.search(r'field "(\w+)"', str(exc))
        variable = f"JOBRUNNER_{field.group(1).upper()}: " if field else ""
        complain(f"jobrunner: invalid settings: {variable}{exc} (values given as JSON must parse)")
        return EXIT_USAGE
    register_settings_secrets(settings)
    configure_logging(settings.log_format, settings.log_level)
    _warn_about_unknown_variables(as_log=args.command == "run")
    try:
        code: int = args.func(args, settings)
    except (RegistryError, InvalidDatabaseUrl, EmbeddedUnavailable, MigrationError, DatabaseUnavailable) as exc:
        complain(f"jobrunner: {exc}")
        return EXIT_USAGE
    except _NOT_MIGRATED as exc:
        complain(f"jobrunner: the database is not migrated ({exc}); run `jobrunner migrate` first")
        return EXIT_USAGE
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError) as exc:
        complain(f"jobrunner: cannot connect to the database: {exc}")
        return EXIT_USAGE
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        complain(f"jobrunner: the database refused the login: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code
