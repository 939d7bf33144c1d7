"""docs/reference/settings.md cannot drift from `Settings`: every setting has a row under every
environment name it is read from, no row names a variable that is not read, and a default written
as a plain value (`10`, `auto`, `{}`) is the code's default."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from jobrunner.settings import Settings
from tests.support import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "reference" / "settings.md"
_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def _rows(page: Path) -> dict[frozenset[str], str]:
    """The table's rows: the variable names of the first cell → the default cell."""
    rows: dict[frozenset[str], str] = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and line.startswith("| `"):
            rows[frozenset(_NAME.findall(cells[0]))] = cells[1]
    return rows


def _names(field: str) -> frozenset[str]:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return frozenset(str(choice) for choice in alias.choices)
    return frozenset({f"JOBRUNNER_{field.upper()}"})


def _default(field: str) -> Any:
    info = Settings.model_fields[field]
    if info.default is not PydanticUndefined:
        return info.default
    assert info.default_factory is not None
    return info.default_factory()  # type: ignore[call-arg]


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
        return actual == [part.strip() for part in documented.split(",")]
    if isinstance(actual, float | int) and not isinstance(actual, bool):
        return isinstance(documented, int | float) and float(documented) == float(actual)
    return bool(documented == actual)


def test_every_setting_has_its_row() -> None:
    rows = _rows(PAGE)
    missing = [sorted(_names(field)) for field in Settings.model_fields if _names(field) not in rows]
    assert not missing, f"settings with no row in {PAGE.relative_to(REPO_ROOT)}: {missing}"


def test_every_row_is_a_setting() -> None:
    known = {_names(field) for field in Settings.model_fields}
    unknown = [sorted(names) for names in _rows(PAGE) if names not in known]
    assert not unknown, f"rows that name no setting (or not all its names): {unknown}"


def test_plain_defaults_are_the_code_defaults() -> None:
    rows = _rows(PAGE)
    checked = 0
    wrong = []
    for field in Settings.model_fields:
        documented = _documented_value(rows.get(_names(field), ""))
        if documented is None:
            continue
        checked += 1
        if not _same(documented, _default(field)):
            wrong.append(f"{sorted(_names(field))}: page says {documented!r}, code has {_default(field)!r}")
    assert not wrong, "\n".join(wrong)
    assert checked >= 30, f"only {checked} defaults could be read: the table's format changed"


def test_the_checker_sees_a_wrong_default(tmp_path: Path) -> None:
    page = tmp_path / "settings.md"
    page.write_text("| `JOBRUNNER_CONCURRENCY` | `12` | x |\n", encoding="utf-8")
    ((names, cell),) = _rows(page).items()
    assert names == frozenset({"JOBRUNNER_CONCURRENCY"})
    assert not _same(_documented_value(cell), _default("concurrency"))
    assert _same(_documented_value("`10`"), _default("concurrency"))
