"""`jobrunner pause [QUEUE]` and `jobrunner resume QUEUE` (see jobrunner.queue_pauses)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from jobrunner.cli.exit_codes import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from jobrunner.audit import Actor
    from jobrunner.settings import Settings


def cli_actor() -> Actor:
    """The operating-system user who runs the command, as the audit trail names them."""
    import getpass

    from jobrunner.audit import Actor

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        user = "unknown"
    return Actor(f"cli:{user}", "cli")


def _run(settings: Settings, action: str, queue: str | None, reason: str | None) -> int:
    # imported when the command runs: every command builds this module's parsers
    import asyncpg

    from jobrunner import event_loop
    from jobrunner.database import DatabaseTarget, connect_kwargs
    from jobrunner.display import literal
    from jobrunner.dsn import DatabaseUrl
    from jobrunner.operator_statements import OperatorStatements
    from jobrunner.queue_pauses import InvalidQueueName, pause_queue, queue_pauses, resume_queue

    async def body(url: DatabaseUrl) -> int:
        statements = OperatorStatements(settings.schema_name)
        conn = await asyncpg.connect(**connect_kwargs(url, settings.connect_timeout))
        try:
            if queue is None:
                for pause in await queue_pauses(conn, statements):
                    why = f" ({literal(pause.reason)})" if pause.reason else ""
                    print(
                        f"{literal(pause.queue)}: paused {pause.paused_at:%Y-%m-%d %H:%M:%S %Z} by "
                        f"{literal(pause.paused_by)}{why}"
                    )
                return EXIT_OK
            if action == "pause":
                changed = await pause_queue(conn, statements, queue, cli_actor(), reason)
                print(f"paused queue {literal(queue)}" if changed else f"queue {literal(queue)} was already paused")
            else:
                changed = await resume_queue(conn, statements, queue, cli_actor())
                print(f"resumed queue {literal(queue)}" if changed else f"queue {literal(queue)} was not paused")
        finally:
            await conn.close()
        return EXIT_OK

    try:
        with DatabaseTarget(settings) as (url, _listen):
            return event_loop.run(body(url), settings.event_loop)
    except InvalidQueueName as exc:
        print(f"jobrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, "pause", args.queue, args.reason)


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, "resume", args.queue, None)


def add_pause_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pause = sub.add_parser(
        "pause",
        help="pause a queue on every replica (its jobs wait, new ones are accepted); without QUEUE, list paused queues",
        description="Pause QUEUE on every replica: no daemon claims its jobs from its next claim on (jobs already "
        "claimed run on), and new jobs are still accepted. The pause is a row in jobrunner_queue_pauses and an "
        "entry in the audit trail (jobrunner_audit). Without QUEUE, list the paused queues.",
    )
    pause.add_argument("queue", nargs="?", metavar="QUEUE", help="the queue to pause (1 to 200 characters)")
    pause.add_argument("--reason", help="why, shown with the pause and kept in the audit trail")
    pause.set_defaults(func=cmd_pause)

    resume = sub.add_parser(
        "resume",
        help="resume a paused queue",
        description="Resume QUEUE: daemons claim its jobs again, and idle ones that work it are woken at once.",
    )
    resume.add_argument("queue", metavar="QUEUE", help="the paused queue to resume")
    resume.set_defaults(func=cmd_resume)
