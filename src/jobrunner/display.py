"""Text from job rows made safe to show on an operator's terminal.

Job types, queues, errors and schedule names are written by anyone who can insert a job. Shown
as they are, rich would read `[...]` as markup (and fail on a stray `[/]`), and the terminal
would obey ESC/OSC sequences in them (clear the screen, retitle the window, plant a hyperlink).
An error stored before a secret was registered would show it.
"""

from __future__ import annotations

import re
from typing import Any

from rich.table import Table
from rich.text import Text

from jobrunner.redaction import redact_text

# C0 (tab and newline too: a table cell is one line), DEL, C1 (0x9b is a one-byte CSI), and the
# bidirectional overrides that make a terminal show text in another order than it is stored
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """`value` as text with every control character written out (`\\x1b`), nothing left to obey."""
    return _UNSAFE.sub(_visible, "" if value is None else str(value))


def literal(value: object) -> Text:
    """A rich cell that shows `value` literally: no markup, no emoji codes, no control characters,
    and no secret (rows written before masking existed, or by other writers, may hold one)."""
    return Text(printable(redact_text("" if value is None else str(value))))


def status_table(counts: list[Any], title: str = "Jobs by type and status") -> Table:
    statuses = ["pending", "running", "completed", "failed", "dead", "cancelled"]
    by_type: dict[str, dict[str, int]] = {}
    for row in counts:
        by_type.setdefault(row["job_type"], {})[row["status"]] = row["jobs"]
    # jobs waiting for their parents (job flows): a column only where there are some
    if any(row["status"] == "blocked" for row in counts):
        statuses.insert(0, "blocked")
    table = Table(title=title)
    table.add_column("job_type")
    for status in statuses:
        table.add_column(status, justify="right")
    for job_type, per_status in sorted(by_type.items()):
        table.add_row(literal(job_type), *(str(per_status.get(s, 0)) for s in statuses))
    return table
