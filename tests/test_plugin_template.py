"""The plugin template (examples/plugin-template), from its source folder: its pyproject is complete,
its entry points name what jobrunner expects, `migrate` on an empty database creates its table
and function, and its handler runs a job to `completed`. `.ci/check_plugin_template.sh` does the
same from the built wheel in a fresh virtualenv (it needs the network for pip)."""

from __future__ import annotations

import importlib
import sys
import tomllib
import types
from collections.abc import Iterator

import asyncpg
import pytest

from jobrunner import Handler, MigrationSet, Schedule
from jobrunner.migrate import discover_migration_sets, migrate
from tests.support import REPO_ROOT, running_daemon, wait_for

TEMPLATE = REPO_ROOT / "examples" / "plugin-template"


@pytest.fixture
def template_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(TEMPLATE))
    yield
    for name in [n for n in sys.modules if n == "my_jobs" or n.startswith("my_jobs.")]:
        del sys.modules[name]


def _entry_point(group: str) -> dict[str, str]:
    project = tomllib.loads((TEMPLATE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    points: dict[str, str] = project["entry-points"][group]
    return points


def _load(value: str) -> object:
    module_name, _, attribute = value.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def test_the_pyproject_is_installable() -> None:
    project = tomllib.loads((TEMPLATE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] and project["version"], "pip refuses a project without a name and a version"
    assert any(dep.startswith("jobrunner") for dep in project["dependencies"])


@pytest.mark.usefixtures("template_importable")
def test_the_entry_points_name_what_jobrunner_loads() -> None:
    (handlers,) = _entry_point("jobrunner.handlers").values()
    module = _load(handlers)
    assert isinstance(module, types.ModuleType)
    assert [h.job_type for h in vars(module).values() if isinstance(h, Handler)] == ["greet"]
    (migrations,) = _entry_point("jobrunner.migrations").values()
    migration_set = _load(migrations)
    assert isinstance(migration_set, MigrationSet)
    assert [(m.version, m.name) for m in migration_set.items] == [(1, "greetings")]
    assert [f.name for f in migration_set.functions] == ["greetings_of"]
    (schedules,) = _entry_point("jobrunner.schedules").values()
    loaded = _load(schedules)
    assert isinstance(loaded, list) and all(isinstance(s, Schedule) for s in loaded) and loaded


@pytest.mark.usefixtures("template_importable")
async def test_migrate_creates_its_table_and_its_handler_runs(empty_db_url: str) -> None:
    migration_set = _load(_entry_point("jobrunner.migrations")["my_jobs"])
    assert isinstance(migration_set, MigrationSet)
    conn = await asyncpg.connect(empty_db_url)
    try:
        # the core and every installed plugin, as `jobrunner migrate` would find them, then the template
        applied = await migrate(conn, "public", [*discover_migration_sets(), migration_set])
        assert "my_jobs/0001_greetings" in applied and "my_jobs/functions/greetings_of" in applied
        assert await conn.fetchval("SELECT to_regclass('public.greetings') IS NOT NULL")
        module = _load(_entry_point("jobrunner.handlers")["greetings"])
        handlers = [h for h in vars(module).values() if isinstance(h, Handler)]
        job_id = await conn.fetchval("SELECT enqueue_job('greet', '{\"name\": \"Ada\"}')")
        async with running_daemon(empty_db_url, handlers, burst=True):
            pass
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed")
        assert await conn.fetchval("SELECT result::text FROM background_jobs WHERE id = $1", job_id) == (
            '{"greetings": 1}'
        )
        assert await conn.fetchval("SELECT name FROM public.greetings WHERE job_id = $1", job_id) == "Ada"
    finally:
        await conn.close()


def test_the_plugin_page_includes_the_template_files() -> None:
    """The docs show the template's own files (snippets), not copies that could drift."""
    page = (REPO_ROOT / "docs" / "how-to" / "write-a-plugin.md").read_text(encoding="utf-8")
    for path in sorted(p for p in TEMPLATE.rglob("*") if p.is_file() and p.suffix in {".toml", ".py", ".sql"}):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(REPO_ROOT)
        assert f'--8<-- "{relative}"' in page, f"docs/how-to/write-a-plugin.md does not include {relative}"
