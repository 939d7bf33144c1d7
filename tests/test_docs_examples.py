"""Every code block of the documentation that is meant to run runs here, as written.

Each page (README.md, docs/**/*.md) gets a fresh migrated database and an empty working
directory; its blocks run in order, as a reader would run them (tests/docs_examples.py says how
each kind of block runs). At the end every job the page created must have ended `completed` or
`cancelled` (or what the page declares): jobs still pending are made runnable and worked by one
more `jobrunner run --burst` with the page's handler modules, so an example that enqueues a job
its handler would refuse fails here, not in a reader's hands.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from jobrunner.registry import HandlerRegistry
from tests.docs_examples import (
    Block,
    Command,
    DocsExampleError,
    Page,
    documentation_pages,
    output_matches,
    parse_blocks,
    parse_console,
    parse_info,
    parse_page,
)
from tests.support import REPO_ROOT

PAGES = documentation_pages(REPO_ROOT)
COMMAND_TIMEOUT = 120


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _environment(db_url: str) -> dict[str, str]:
    """The reader's shell: this venv's commands first, the page's database, nothing of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=db_url,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        # many daemons run side by side on this machine: each takes a free port
        JOBRUNNER_HTTP_PORT="0",
        # the app plugin's hourly schedules would add jobs to a page's database
        JOBRUNNER_PLUGIN_SCHEDULES="false",
        JOBRUNNER_LOG_FORMAT="json",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(argv: list[str], workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )


def _failure(block: Block, what: str, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{block.where}: {what} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


def _write_file(block: Block, workdir: Path) -> None:
    assert block.title
    target = (workdir / block.title).resolve()
    assert target.is_relative_to(workdir.resolve()), f"{block.where}: {block.title} is outside the working directory"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.text, encoding="utf-8")
    if target.suffix == ".py":
        py_compile.compile(str(target), cfile=str(workdir / ".compiled.pyc"), doraise=True)


def _run_console(block: Block, workdir: Path, env: dict[str, str], modules: list[str]) -> None:
    for command in parse_console(block):
        modules.extend(command.handler_modules())
        result = _run(["bash", "-euo", "pipefail", "-c", command.line], workdir, env)
        assert result.returncode == 0, _failure(block, f"`{command.line}`", result)
        _check_output(block, command, result)


def _check_output(block: Block, command: Command, result: subprocess.CompletedProcess[str]) -> None:
    if not any(line.strip() for line in command.expected):
        return
    assert output_matches(command.expected, result.stdout), (
        f"{block.where}: `{command.line}` printed\n{result.stdout}\n--- but the page shows\n"
        + "\n".join(command.expected)
    )


async def _run_block(block: Block, workdir: Path, env: dict[str, str], db_url: str, modules: list[str]) -> None:
    if block.kind == "file":
        _write_file(block, workdir)
    elif block.language == "python":
        script = workdir / f"docs_example_line_{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        result = await asyncio.to_thread(_run, [sys.executable, str(script)], workdir, env)
        assert result.returncode == 0, _failure(block, "the example", result)
    elif block.language == "sql":
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(block.text)
        finally:
            await conn.close()
    elif block.language == "console":
        await asyncio.to_thread(_run_console, block, workdir, env, modules)
    else:  # sh, bash
        result = await asyncio.to_thread(_run, ["bash", "-euo", "pipefail", "-c", block.text], workdir, env)
        assert result.returncode == 0, _failure(block, "the script", result)


async def _settle_jobs(
    page: Page, conn: asyncpg.Connection, workdir: Path, env: dict[str, str], modules: list[str]
) -> None:
    """Work what the page left pending, or check its payloads against their handlers."""
    pending = await conn.fetch(
        "SELECT id, job_type, payload::text AS payload FROM background_jobs WHERE status = 'pending'"
    )
    if not pending:
        return
    if page.validate_jobs:
        registry = HandlerRegistry()
        registry.load_entry_points()
        for row in pending:
            found = registry.get(row["job_type"])
            assert found is not None, (
                f"{page.path}: job {row['id']} has the type {row['job_type']!r}, which nothing handles"
            )
            if found.payload_model is not None:
                found.payload_model.model_validate_json(row["payload"])
        return
    # jobs the page scheduled for later run now: their payloads are examples too
    await conn.execute("UPDATE background_jobs SET scheduled_at = now() WHERE status = 'pending'")
    argv = [sys.executable, "-m", "jobrunner", "run", "--burst"]
    for module in dict.fromkeys(modules):
        argv += ["--handlers", module]
    result = await asyncio.to_thread(_run, argv, workdir, env)
    assert result.returncode == 0, f"{page.path}: the last daemon exited {result.returncode}\n{result.stderr[-4000:]}"


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_every_block_runs_or_says_why_not(path: Path) -> None:
    page = parse_page(path, REPO_ROOT)
    kinds = [block.kind for block in page.blocks]  # raises on a block that is neither
    assert len(kinds) == len(page.blocks)
    for block in page.blocks:
        if block.kind == "run" and block.language == "console":
            parse_console(block)


def _pages_to_run(*, empty_database: bool) -> list[Path]:
    pages = [path for path in PAGES if parse_page(path, REPO_ROOT).runs_anything]
    return [path for path in pages if parse_page(path, REPO_ROOT).empty_database == empty_database]


@pytest.mark.parametrize("path", _pages_to_run(empty_database=False), ids=_page_id)
async def test_page_examples(path: Path, db_url: str, tmp_path: Path) -> None:
    await _run_page(parse_page(path, REPO_ROOT), db_url, tmp_path)


@pytest.mark.parametrize("path", _pages_to_run(empty_database=True), ids=_page_id)
async def test_page_examples_from_an_empty_database(path: Path, empty_db_url: str, tmp_path: Path) -> None:
    """Pages that start where a new reader starts: a database nothing was applied to."""
    await _run_page(parse_page(path, REPO_ROOT), empty_db_url, tmp_path)


async def _run_page(page: Page, db_url: str, workdir: Path) -> None:
    missing = [module for module in page.requires if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} installed")
    env = _environment(db_url)
    modules: list[str] = []
    for block in page.blocks:
        if block.kind != "skip":
            await _run_block(block, workdir, env, db_url, modules)
    conn = await asyncpg.connect(db_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('background_jobs') IS NOT NULL"):
            return  # the page never migrated: it made no job
        await _settle_jobs(page, conn, workdir, env, modules)
        rows = await conn.fetch("SELECT id, job_type, status, last_error FROM background_jobs ORDER BY id")
    finally:
        await conn.close()
    allowed = set(page.ends) | ({"pending"} if page.validate_jobs else set())
    wrong = [dict(row) for row in rows if row["status"] not in allowed]
    assert not wrong, f"{page.path}: jobs that did not end {' or '.join(sorted(allowed))}:\n" + json.dumps(
        wrong, indent=1, default=str
    )


# -- the parser itself ----------------------------------------------------------------------


def test_blocks_are_classified(tmp_path: Path) -> None:
    text = (
        '# page\n\n```python\nprint(1)\n```\n\n```python title="tasks.py"\nX = 1\n```\n\n'
        "```toml {.no-run}\na = 1\n```\n\n```text\ndiagram\n```\n\n"
        '=== "tab"\n\n    ```sql\n    SELECT 1;\n    ```\n'
    )
    blocks = parse_blocks(Path("page.md"), text)
    assert [(b.language, b.kind) for b in blocks] == [
        ("python", "run"),
        ("python", "file"),
        ("toml", "skip"),
        ("text", "skip"),
        ("sql", "run"),
    ]
    assert blocks[1].title == "tasks.py"
    assert blocks[4].text == "SELECT 1;\n"


def test_a_title_beside_the_braces_is_refused() -> None:
    """Material renders ```toml title="x" {.no-run} as text; the title goes inside the braces."""
    with pytest.raises(DocsExampleError, match="not"):
        parse_info('toml title="x.toml" {.no-run}')
    assert parse_info('toml {.no-run title="x.toml"}') == ("toml", "x.toml", True)


def test_an_unmarked_block_that_cannot_run_is_an_error() -> None:
    (block,) = parse_blocks(Path("page.md"), "```toml\na = 1\n```\n")
    with pytest.raises(DocsExampleError, match=r"page.md:1: a ```toml block neither runs nor is marked"):
        _ = block.kind


def test_console_commands_and_their_output() -> None:
    (block,) = parse_blocks(
        Path("page.md"),
        "```console\n$ jobrunner enqueue x \\\n    --payload '{}'\n1\n"
        "$ python -m jobrunner run --handlers tasks\n```\n",
    )
    first, second = parse_console(block)
    assert first.line == "jobrunner enqueue x \n    --payload '{}'"
    assert first.expected == ["1"]
    assert second.handler_modules() == ["tasks"]
    assert output_matches(["a", "...", "d ... f"], "a\nb\nc\nd e f\n")
    assert not output_matches(["a", "d ... f"], "a\nb\nd e f\n")
    assert not output_matches(["1"], "2\n")
