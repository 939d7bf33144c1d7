"""`jobrunner retry` and `jobrunner cancel`: one job, or every failed job of a type."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from jobrunner.cli.connection import connection, with_database
from jobrunner.cli.exit_codes import EXIT_FAILURE, EXIT_NOTHING_TO_CANCEL, EXIT_OK, EXIT_USAGE
from jobrunner.display import printable
from jobrunner.dsn import DatabaseUrl
from jobrunner.job_statements import JobStatements
from jobrunner.settings import Settings
from jobrunner.statements import Row, run

CANCEL_EXIT_CODES = f"""exit codes:
  {EXIT_OK}  cancelled (it was pending or blocked), or running and its worker told to stop it
  {EXIT_FAILURE}  there is no such job
  {EXIT_USAGE}  usage error: invalid settings, database not migrated, cannot connect
  {EXIT_NOTHING_TO_CANCEL}  nothing to cancel: the job had already ended (completed, failed, dead or cancelled)"""


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        statements = JobStatements(settings.schema_name)
        async with connection(url, settings) as conn:
            try:
                if args.job_id is not None:
                    rows = await run(conn, statements.retry_job(args.job_id))
                else:
                    rows = await run(conn, statements.retry_all_of_type(args.type))
            except asyncpg.UniqueViolationError:
                print(
                    "jobrunner: not requeued: a live job already holds the dedupe_key of "
                    + ("this job" if args.job_id is not None else "one of these jobs")
                    + "; let it finish (or cancel it) first",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            if rows:
                await run(conn, statements.notify_queues(sorted({r["queue"] for r in rows})))
        if args.job_id is not None and not rows:
            print(f"jobrunner: job {args.job_id} does not exist or is not failed, dead or cancelled", file=sys.stderr)
            return EXIT_FAILURE
        print(f"requeued {len(rows)} job(s)")
        return EXIT_OK

    return with_database(settings, body)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def body(url: DatabaseUrl, _listen: DatabaseUrl | None) -> int:
        async with connection(url, settings) as conn:
            row = await run(conn, JobStatements(settings.schema_name).cancel_job_reporting(args.job_id))
        return report_cancel(args.job_id, row)

    return with_database(settings, body)


def report_cancel(job_id: int, row: Row | None) -> int:
    """What `cancel` did, from the job's state before and after (see CANCEL_EXIT_CODES)."""
    if row is None:
        print(f"jobrunner: there is no job {job_id}", file=sys.stderr)
        return EXIT_FAILURE
    before, after = row["status_before"], row["status_after"]
    if before in ("pending", "blocked"):
        # blocked: waiting for its parents (job flows), cancelled at once like a pending job
        print(f"cancelled job {job_id} (it was {before})")
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


def add_manage_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
