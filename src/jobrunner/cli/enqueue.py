"""`jobrunner enqueue`: one job from the command line, through AsyncClient."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from jobrunner.cli.connection import connection, with_database
from jobrunner.cli.exit_codes import EXIT_OK, EXIT_USAGE
from jobrunner.client import AsyncClient
from jobrunner.dsn import DatabaseUrl
from jobrunner.new_job import InvalidJob
from jobrunner.settings import Settings


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"jobrunner: --payload is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(payload, dict):
        # null too: the client would take None for "no payload" and store {}
        kind = "null" if payload is None else f"a JSON {json_kind(payload)}"
        print(f"jobrunner: --payload must be a JSON object ({{...}}), not {kind}", file=sys.stderr)
        return EXIT_USAGE

    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with connection(url, settings) as conn:
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
                depends_on=args.depends_on,
                on_parent_failure=args.on_parent_failure,
            )
        print(job_id)
        return EXIT_OK

    try:
        return with_database(settings, body)
    except InvalidJob as exc:
        print(f"jobrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE


def json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "boolean" if isinstance(value, bool) else "number"


def job_ids(text: str) -> list[int]:
    """--depends-on: job ids separated by commas."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not job ids separated by commas: {text!r}") from None


def aware_time(text: str) -> datetime:
    """--run-at: an ISO 8601 time that says which zone it is in (a bare local time is ambiguous
    on a server, and the clients refuse naive datetimes)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add one, e.g. {text}+00:00 or {text}Z")
    return moment


def add_enqueue_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        type=aware_time,
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
    enqueue.add_argument(
        "--depends-on",
        type=job_ids,
        default=None,
        metavar="ID[,ID...]",
        help="run only once these jobs have finished (job flows); the job waits blocked until then",
    )
    enqueue.add_argument(
        "--on-parent-failure",
        choices=("cancel", "run"),
        default="cancel",
        help="with --depends-on: what a parent that fails, dies or is cancelled does to the job: "
        "cancel it (default) or run it anyway once every parent finished",
    )
    enqueue.set_defaults(func=cmd_enqueue)
