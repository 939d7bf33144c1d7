"""The statements of the dashboard's actions on jobs (jobrunner.dashboard.actions runs them),
each defined once (jobrunner.statements)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jobrunner.dashboard.filters import JobFilter
from jobrunner.sql_files import Queries
from jobrunner.statements import Returns, Row, Statement


class ActionStatements:
    """The statements for one schema: `ActionStatements("public").id_bounds()`."""

    __slots__ = ("queries",)

    def __init__(self, schema: str) -> None:
        self.queries = Queries(schema)

    def change_jobs(self, query: str, ids: Sequence[int], priority: int | None) -> Statement[list[Row]]:
        """One action's statement (`query`, a dashboard_*_jobs or dashboard_set_priority
        statement) on `ids`: a row per job it changed (cancel: per job it found, with its status);
        `priority` is set_priority's new priority, None for the others."""
        args: tuple[object, ...] = (list(ids),) if priority is None else (list(ids), priority)
        return Statement(getattr(self.queries, query), args, Returns.ROWS)

    def id_bounds(self) -> Statement[Row | None]:
        """(lowest, highest) job ids."""
        return Statement(self.queries.dashboard_id_bounds, (), Returns.ROW)

    def count_matching(self, upper_id: int, statuses: Sequence[str], job_filter: JobFilter) -> Statement[int]:
        """How many jobs up to `upper_id` in `statuses` match the filter."""
        return Statement(
            self.queries.dashboard_count_matching, (upper_id, list(statuses), *job_filter.sql_args()), Returns.VALUE
        )

    def pick_matching(
        self, below: int, statuses: Sequence[str], job_filter: JobFilter, batch: int
    ) -> Statement[list[Row]]:
        """The next `batch` matching jobs at or below id `below`, newest first, locked (SKIP LOCKED)."""
        return Statement(
            self.queries.dashboard_pick_matching,
            (below, list(statuses), *job_filter.sql_args(), batch),
            Returns.ROWS,
        )

    def notify_queues(self, queues: Iterable[str]) -> Statement[None]:
        """Wake the daemons working `queues` (sent when the transaction commits)."""
        return Statement(self.queries.notify_queues, (sorted(queues),), Returns.NOTHING, _nothing)


def _nothing(_result: object) -> None:
    return None
