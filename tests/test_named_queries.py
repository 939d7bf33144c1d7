"""jobrunner.load_queries: a plugin's named SQL statements, read from a file of its package."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrunner import load_queries

QUERIES = """\
-- the file's own comment, before any name, belongs to no statement
-- name: first
SELECT 1;

-- name: second
SELECT *
FROM t
WHERE id = $1;
"""


def make_package(root: Path, name: str, text: str) -> None:
    package = root / name
    (package / "sql").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sql" / "queries.sql").write_text(text)


def test_statements_are_found_by_name_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(tmp_path, "plugin_with_queries", QUERIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    queries = load_queries("plugin_with_queries", "sql/queries.sql")
    assert dict(queries) == {"first": "SELECT 1;", "second": "SELECT *\nFROM t\nWHERE id = $1;"}
    with pytest.raises(KeyError, match=r"no query named 'third' in plugin_with_queries/sql/queries.sql"):
        queries["third"]


def test_a_name_used_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(tmp_path, "plugin_with_a_twice_named_query", QUERIES + "\n-- name: first\nSELECT 2;\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="query 'first' is defined twice"):
        load_queries("plugin_with_a_twice_named_query", "sql/queries.sql")
