"""The plugin's SQL, loaded by name from `sql/queries.sql` (Python builds no SQL)."""

from __future__ import annotations

from jobrunner import load_queries

QUERIES = load_queries("jobrunner_handlers", "sql/queries.sql")


def sql(name: str) -> str:
    return QUERIES[name]


def names() -> list[str]:
    return sorted(QUERIES)
