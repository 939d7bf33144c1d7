"""Load the SQL that lives in `sql/`: named queries, numbered migrations and function files.

Python never builds SQL; the only substitution is the schema name, validated as an identifier
by the settings before it gets here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from jobrunner.named_queries import parse_queries

_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_FUNCTION_FILE = re.compile(r"^(\w+)\.sql$")
# in a migration: apply these function files here (see jobrunner.migrate)
_FUNCTIONS_LINE = re.compile(r"^-- jobrunner:functions((?:\s+\w+)+)\s*$", re.MULTILINE)
# in a function file's leading comment: the function files to apply before this one
_REQUIRES_LINE = re.compile(r"^-- requires:\s*(\w+(?:\s*,\s*\w+)*)\s*$", re.MULTILINE)
_PARAMETER = re.compile(r"\$(\d+)\b")


def sql_dir() -> Path:
    """`sql/` inside the installed wheel, else the repository's top-level `sql/`."""
    packaged = Path(str(resources.files("jobrunner"))) / "sql"
    if packaged.is_dir():
        return packaged
    repository = Path(__file__).resolve().parents[2] / "sql"
    if repository.is_dir():
        return repository
    raise FileNotFoundError("jobrunner's sql/ directory is missing from this installation")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def render(text: str, schema: str) -> str:
    return text.replace("{schema}", quote_identifier(schema)).replace("{schema_name}", schema)


def literal(value: str | int | None) -> str:
    """A value as an SQL literal (standard_conforming_strings, the default since PostgreSQL 9.1)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def bind(query: str, *args: str | int | None) -> str:
    """A named query with its $n parameters written in as literals, for a script to be run as is
    (`jobrunner migrate --sql`); only for queries whose text holds no other `$`."""
    return _PARAMETER.sub(lambda m: literal(args[int(m.group(1)) - 1]), query)


@cache
def _raw_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, body in parse_queries(path.read_text(), path.name).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (second in {path.name})")
            queries[name] = body
    return queries


class Queries:
    """Named queries rendered for one schema: `Queries("public").claim`."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._rendered = {name: render(body, schema) for name, body in _raw_queries().items()}

    def __getattr__(self, name: str) -> str:
        try:
            return self._rendered[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in sql/queries") from None


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    """A numbered migration: applied once, never edited afterwards."""

    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return _checksum(self.text)

    def rendered(self, schema: str) -> str:
        return render(self.text, schema)

    def parts(self) -> list[str | tuple[str, ...]]:
        """The text cut at its `-- jobrunner:functions a b` lines: SQL, then the names of the
        function files to apply at that point, then SQL again."""
        found: list[str | tuple[str, ...]] = []
        start = 0
        for mark in _FUNCTIONS_LINE.finditer(self.text):
            found += [self.text[start : mark.start()], tuple(mark.group(1).split())]
            start = mark.end()
        return [*found, self.text[start:]]


@dataclass(frozen=True)
class FunctionFile:
    """The current text of one SQL function (or a few overloads) with its privileges: applied
    again whenever the text changes, like Flyway's repeatable migrations."""

    name: str
    text: str

    @property
    def checksum(self) -> str:
        return _checksum(self.text)

    @property
    def requires(self) -> tuple[str, ...]:
        """The function files this one needs before it (its `-- requires: a, b` lines)."""
        return tuple(name.strip() for mark in _REQUIRES_LINE.finditer(self.text) for name in mark.group(1).split(","))

    def rendered(self, schema: str) -> str:
        return render(self.text, schema)


def migrations(directory: Path | None = None) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted((directory or sql_dir() / "migrations").glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_description.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number: {versions}")
    return found


def function_files(directory: Path) -> list[FunctionFile]:
    """The function files of a folder, by name; none when the folder does not exist."""
    found: list[FunctionFile] = []
    for path in sorted(directory.glob("*.sql")) if directory.is_dir() else []:
        match = _FUNCTION_FILE.match(path.name)
        if not match:
            raise ValueError(f"function file {path.name} is not named <function_name>.sql")
        found.append(FunctionFile(match.group(1), path.read_text()))
    return found
