"""The settings tables cannot drift from the code: docs/reference/settings.md from jobrunner's
`Settings`, docs/app/settings.md from the app plugin's `AppSettings`. Every setting has a row under
every environment name it is read from, no row names a variable that is not read, and a default
written as a plain value (`10`, `auto`, `{}`) is the code's default."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from jobrunner.settings import Settings
from tests.support import REPO_ROOT

_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


@dataclass(frozen=True)
class Table:
    page: Path
    module: str
    class_name: str

    @property
    def settings(self) -> type[BaseSettings]:
        found: type[BaseSettings] = getattr(importlib.import_module(self.module), self.class_name)
        return found

    @property
    def prefix(self) -> str:
        return str(self.settings.model_config.get("env_prefix", ""))

    def names(self, field: str) -> frozenset[str]:
        """The environment names a field is read from."""
        alias = self.settings.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return frozenset(str(choice) for choice in alias.choices)
        return frozenset({f"{self.prefix}{field}".upper()})

    def default(self, field: str) -> Any:
        info = self.settings.model_fields[field]
        if info.default is not PydanticUndefined:
            return info.default
        assert info.default_factory is not None
        return info.default_factory()  # type: ignore[call-arg]


TABLES = [
    Table(REPO_ROOT / "docs" / "reference" / "settings.md", "jobrunner.settings", "Settings"),
    Table(REPO_ROOT / "docs" / "app" / "settings.md", "jobrunner_handlers.settings", "AppSettings"),
]


@pytest.fixture(params=TABLES, ids=lambda table: str(table.page.relative_to(REPO_ROOT)))
def table(request: pytest.FixtureRequest) -> Table:
    chosen: Table = request.param
    pytest.importorskip(chosen.module)
    return chosen


def _rows(page: Path) -> dict[frozenset[str], str]:
    """The table's rows: the variable names of the first cell → the default cell."""
    rows: dict[frozenset[str], str] = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and line.startswith("| `"):
            rows[frozenset(_NAME.findall(cells[0]))] = cells[1]
    return rows


def _documented_value(cell: str) -> Any:
    """The default cell as a value when it is one backticked literal, else None (prose)."""
    match = re.fullmatch(r"`([^`]+)`(?: \(.*\))?", cell)
    if not match:
        return None
    text = match.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _same(documented: Any, actual: Any) -> bool:
    if isinstance(actual, list) and isinstance(documented, str):
        return [str(item) for item in actual] == [part.strip() for part in documented.split(",")]
    if isinstance(actual, float | int) and not isinstance(actual, bool):
        return isinstance(documented, int | float) and float(documented) == float(actual)
    return bool(documented == actual)


def test_every_setting_has_its_row(table: Table) -> None:
    rows = _rows(table.page)
    missing = [sorted(table.names(field)) for field in table.settings.model_fields if table.names(field) not in rows]
    assert not missing, f"settings with no row in {table.page.relative_to(REPO_ROOT)}: {missing}"


def test_every_row_is_a_setting(table: Table) -> None:
    known = {table.names(field) for field in table.settings.model_fields}
    unknown = [sorted(names) for names in _rows(table.page) if names not in known]
    assert not unknown, f"rows that name no setting (or not all its names): {unknown}"


def test_plain_defaults_are_the_code_defaults(table: Table) -> None:
    rows = _rows(table.page)
    checked = 0
    wrong = []
    for field in table.settings.model_fields:
        documented = _documented_value(rows.get(table.names(field), ""))
        if documented is None:
            continue
        checked += 1
        if not _same(documented, table.default(field)):
            wrong.append(f"{sorted(table.names(field))}: page says {documented!r}, code has {table.default(field)!r}")
    assert not wrong, "\n".join(wrong)
    assert checked >= len(table.settings.model_fields) // 2, f"only {checked} defaults could be read"


def test_the_checker_sees_a_wrong_default(tmp_path: Path) -> None:
    page = tmp_path / "settings.md"
    page.write_text("| `JOBRUNNER_CONCURRENCY` | `12` | x |\n", encoding="utf-8")
    ((names, cell),) = _rows(page).items()
    assert names == frozenset({"JOBRUNNER_CONCURRENCY"})
    core = TABLES[0]
    assert not _same(_documented_value(cell), core.default("concurrency"))
    assert _same(_documented_value("`10`"), core.default("concurrency"))
    assert Settings is core.settings
