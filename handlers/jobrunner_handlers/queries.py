"""The plugin's SQL, loaded by name from `sql/queries.sql` (Python builds no SQL)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
QUERIES_FILE = Path(__file__).with_name("sql") / "queries.sql"


@cache
def _all() -> dict[str, str]:
    text = QUERIES_FILE.read_text()
    marks = list(_NAME_LINE.finditer(text))
    found: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        name = mark.group(1)
        if name in found:
            raise ValueError(f"query {name!r} is defined twice in {QUERIES_FILE.name}")
        found[name] = text[mark.end() : following.start() if following else len(text)].strip()
    return found


def sql(name: str) -> str:
    try:
        return _all()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in {QUERIES_FILE}") from None


def names() -> list[str]:
    return sorted(_all())
