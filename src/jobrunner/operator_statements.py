"""The statements of operator actions: queue pauses (table jobrunner_queue_pauses, run by
jobrunner.queue_pauses) and the audit trail (table jobrunner_audit, run by jobrunner.audit),
each defined once for both drivers (jobrunner.statements)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobrunner.sql_files import Queries
from jobrunner.statements import Returns, Row, Statement


class OperatorStatements:
    """The statements for one schema: `OperatorStatements("public").queue_pauses()`."""

    __slots__ = ("queries",)

    def __init__(self, schema: str) -> None:
        self.queries = Queries(schema)

    def pause_queue(self, queue: str, paused_by: str, reason: str | None) -> Statement[bool]:
        """True when the queue was not paused before."""
        return Statement(self.queries.pause_queue, (queue, paused_by, reason), Returns.ROW, _found)

    def resume_queue(self, queue: str) -> Statement[bool]:
        """True when the queue was paused (the daemons working it are woken)."""
        return Statement(self.queries.resume_queue, (queue,), Returns.ROW, _found)

    def queue_pauses(self) -> Statement[list[Row]]:
        """(queue, paused_at, paused_by, reason) rows: every paused queue."""
        return Statement(self.queries.queue_pauses, (), Returns.ROWS)

    def record_audit(
        self,
        actor: str,
        via: str,
        action: str,
        target: Mapping[str, Any],
        requested: int | None,
        affected: int,
        finished: bool,
        detail: str | None,
    ) -> Statement[int]:
        """Write one audit row: its id."""
        return Statement(
            self.queries.record_audit,
            (actor, via, action, json.dumps(dict(target)), requested, affected, finished, detail),
            Returns.VALUE,
        )

    def count_into_audit(self, audit_id: int, affected: int, finished: bool, detail: str | None) -> Statement[None]:
        """Add `affected` to a bulk action's row; `finished` ends it."""
        return Statement(
            self.queries.count_into_audit, (audit_id, affected, finished, detail), Returns.NOTHING, _nothing
        )


def _found(row: Row | None) -> bool:
    return row is not None


def _nothing(_result: object) -> None:
    return None
