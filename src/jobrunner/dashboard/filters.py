"""The job list's filter: read from a page's query string, checked, and handed to SQL as
parameters (dashboard_jobs_page and its twins in sql/queries/dashboard.sql)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

STATUSES = ("pending", "running", "completed", "failed", "dead", "cancelled")
# statuses whose rows a partial index holds in id order, or few enough to sort: a page filtered
# to these reads only matching rows, however old they are (the unsuccessful-jobs index,
# background_jobs_lease_idx). Any other filter reads at most SCAN_WINDOW ids per page.
INDEXED_STATUSES = frozenset({"running", "failed", "dead", "cancelled"})
SCAN_WINDOW = 100_000
PAGE_SIZE = 50
MAX_TEXT = 500
PRIORITY_RANGE = (-1_000_000, 1_000_000)


def _like_pattern(text: str) -> str:
    """`text` anywhere in the error, its LIKE wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _parse_time(value: str) -> datetime:
    """An ISO date-time (a datetime-local input's value, or with an offset); without an offset
    it is UTC, as the dashboard shows every time."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list shows (and a bulk action changes); an empty field matches any job."""

    status: tuple[str, ...] = ()
    job_type: str | None = None
    queue: str | None = None
    priority_min: int | None = None
    priority_max: int | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    key: str | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list, compare=False)

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> JobFilter:
        """From a query string (each name to its values); what cannot be read is left out and
        named in `problems`, never an error page."""
        problems: list[str] = []

        def text(name: str) -> str | None:
            values = params.get(name) or []
            value = values[0].strip() if values else ""
            if len(value) > MAX_TEXT:
                problems.append(f"{name} is longer than {MAX_TEXT} characters")
                return None
            return value or None

        def number(name: str) -> int | None:
            value = text(name)
            if value is None:
                return None
            try:
                parsed = int(value)
            except ValueError:
                problems.append(f"{name} is not a whole number")
                return None
            if not PRIORITY_RANGE[0] <= parsed <= PRIORITY_RANGE[1]:
                problems.append(f"{name} is out of range")
                return None
            return parsed

        def moment(name: str) -> datetime | None:
            value = text(name)
            if value is None:
                return None
            try:
                return _parse_time(value)
            except ValueError:
                problems.append(f"{name} is not a date and time (YYYY-MM-DDTHH:MM)")
                return None

        statuses: list[str] = []
        for value in params.get("status") or []:
            for part in value.split(","):
                if part in STATUSES and part not in statuses:
                    statuses.append(part)
                elif part.strip() and part not in STATUSES:
                    problems.append(f"unknown status {part[:40]!r}")
        return cls(
            status=tuple(statuses),
            job_type=text("job_type"),
            queue=text("queue"),
            priority_min=number("priority_min"),
            priority_max=number("priority_max"),
            created_from=moment("created_from"),
            created_before=moment("created_before"),
            key=text("key"),
            error=text("error"),
            problems=problems,
        )

    @property
    def is_empty(self) -> bool:
        return not self.query_pairs()

    @property
    def index_bounded(self) -> bool:
        """Whether an index holds exactly the rows of this filter's statuses, in id order: then
        a page reads only matching rows and needs no scan window."""
        return bool(self.status) and set(self.status) <= INDEXED_STATUSES

    def sql_args(self) -> tuple[Any, ...]:
        """The filter's parameters, in the order of the dashboard's list statements ($3..$11)."""
        return (
            list(self.status) or None,
            self.job_type,
            self.queue,
            self.priority_min,
            self.priority_max,
            self.created_from,
            self.created_before,
            self.key,
            _like_pattern(self.error) if self.error else None,
        )

    def query_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = [("status", s) for s in self.status]
        for item in fields(self):
            if item.name in ("status", "problems"):
                continue
            value = getattr(self, item.name)
            if value is None:
                continue
            shown = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if isinstance(value, datetime) else str(value)
            pairs.append((item.name, shown))
        return pairs

    def query_string(self, **extra: str | int) -> str:
        return urlencode(self.query_pairs() + [(k, str(v)) for k, v in extra.items()])

    def as_json(self) -> dict[str, Any]:
        """What the audit trail keeps of a bulk action's filter."""
        found: dict[str, Any] = {}
        for name, value in self.query_pairs():
            if name == "status":
                found.setdefault("status", []).append(value)
            else:
                found[name] = value
        return found

    def time_input(self, name: str) -> str:
        """A time field's value as a datetime-local input shows it (UTC)."""
        value: datetime | None = getattr(self, name)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""
