"""Named SQL statements in a `.sql` file of a package, for plugins: `-- name: some_query` heads
each statement, as in jobrunner's own `sql/queries/`.

    QUERIES = load_queries("my_plugin", "sql/queries.sql")
    await conn.fetch(QUERIES["recent_orders"], user_id)

Python builds no SQL: the file is read once, as it is, and nothing is substituted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


class NamedQueries(Mapping[str, str]):
    """Statements by name; a missing name says which file it was looked for in."""

    def __init__(self, queries: dict[str, str], source: str) -> None:
        self._queries = queries
        self.source = source

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in {self.source}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse_queries(text: str, source: str) -> NamedQueries:
    """The statements of `text`, each from its `-- name:` line to the next one."""
    marks = list(_NAME_LINE.finditer(text))
    found: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        name = mark.group(1)
        if name in found:
            raise ValueError(f"query {name!r} is defined twice in {source}")
        found[name] = text[mark.end() : following.start() if following else len(text)].strip()
    return NamedQueries(found, source)


def load_queries(package: str, resource: str) -> NamedQueries:
    """The named statements of `resource` (a path inside the installed `package`)."""
    path = resources.files(package).joinpath(*resource.split("/"))
    return parse_queries(path.read_text(encoding="utf-8"), f"{package}/{resource}")
