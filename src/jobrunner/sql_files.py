"""Load the SQL that lives in `sql/`: named queries and numbered migrations.

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

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


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


@cache
def _raw_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        text = path.read_text()
        marks = list(_NAME_LINE.finditer(text))
        for mark, following in zip(marks, [*marks[1:], None], strict=True):
            end = following.start() if following else len(text)
            name = mark.group(1)
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (second in {path.name})")
            queries[name] = text[mark.end() : end].strip()
    return queries


class Queries:
    """Named queries rendered for one schema: `Queries("public").claim_batch`."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._rendered = {name: render(body, schema) for name, body in _raw_queries().items()}

    def __getattr__(self, name: str) -> str:
        try:
            return self._rendered[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in sql/queries") from None


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

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
