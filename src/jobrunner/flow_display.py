"""A job's place in a flow, as `jobrunner status --job ID` shows it: how its parents stand, and
which jobs wait for it (the queries are in sql/queries/flows.sql)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from jobrunner.display import literal
from jobrunner.job_statements import JobRecord, JobStatements
from jobrunner.statements import AsyncConnection, run

# the waiting dependents listed; a fan-out of thousands is not printed in full
DEPENDENTS_SHOWN = 20
# the parent ids written out on the depends_on line
PARENT_IDS_SHOWN = 10


async def job_flow(conn: AsyncConnection, statements: JobStatements, record: JobRecord) -> dict[str, Any] | None:
    """{"parents": [{status, jobs, first_ids}], "parents_pruned": n, "waiting_dependents":
    [{id, job_type, status}]}, or None for a job outside any flow."""
    waiting = await run(conn, statements.flow_waiting_dependents(record.id, DEPENDENTS_SHOWN))
    if record.depends_on is None and not waiting:
        return None
    flow: dict[str, Any] = {"waiting_dependents": [dict(row) for row in waiting]}
    if record.depends_on is not None:
        counts = await run(conn, statements.flow_parent_counts(record.id))
        flow["parents"] = [dict(row) for row in counts]
        flow["parents_pruned"] = len(record.depends_on) - sum(row["jobs"] for row in counts)
    return flow


def flow_parents_line(parent_ids: list[int]) -> str:
    """The depends_on field: every id of a small fan-in, the count and the first ids of a large one."""
    if len(parent_ids) <= PARENT_IDS_SHOWN:
        return ", ".join(map(str, parent_ids))
    shown = ", ".join(map(str, parent_ids[:PARENT_IDS_SHOWN]))
    return f"{len(parent_ids)} jobs: {shown}, …"


def flow_table(flow: dict[str, Any]) -> Table:
    table = Table(title="Flow", show_header=False)
    for row in flow.get("parents", []):
        ids = ", ".join(map(str, row["first_ids"]))
        more = ", …" if row["jobs"] > len(row["first_ids"]) else ""
        table.add_row(f"parents {row['status']}", literal(f"{row['jobs']} ({ids}{more})"))
    if flow.get("parents_pruned"):
        table.add_row("parents pruned", str(flow["parents_pruned"]))
    waiting = flow["waiting_dependents"]
    if waiting:
        listed = ", ".join(f"{row['id']} {row['job_type']} ({row['status']})" for row in waiting)
        more = ", …" if len(waiting) == DEPENDENTS_SHOWN else ""
        table.add_row("waiting for this job", literal(listed + more))
    return table
