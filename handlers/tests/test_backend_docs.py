"""docs/app/backend.md: every function the app's callers may call is documented, and every SQL
example runs, as the role it says it runs as."""

from __future__ import annotations

import re

import asyncpg
import pytest

from handlers.tests.api_roles import ApiRoles
from handlers.tests.test_rpc_roles import RPCS, connect_as
from handlers.tests.test_schema import ALICE
from tests.support import REPO_ROOT

DOC = REPO_ROOT / "docs" / "app" / "backend.md"
# the blocks are marked {.no-run} for tests/test_docs_examples.py, which runs them as no role
EXAMPLE = re.compile(r"```sql[^\n]*\n-- as (service_role|authenticated)\b[^\n]*\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in EXAMPLE.finditer(DOC.read_text())]


def test_every_function_the_callers_may_call_is_documented() -> None:
    text = DOC.read_text()
    missing = sorted({rpc.signature.split("(")[0] for rpc in RPCS} - set(re.findall(r"`(\w+)\(", text)))
    assert missing == []


def test_every_sql_block_says_who_runs_it() -> None:
    blocks = re.findall(r"```sql[^\n]*\n", DOC.read_text())
    assert len(examples()) == len(blocks) >= 8


@pytest.mark.parametrize(("role", "sql"), examples(), ids=lambda value: value.splitlines()[0][:40])
async def test_the_examples_run_as_their_role(api: ApiRoles, conn: asyncpg.Connection, role: str, sql: str) -> None:
    await conn.execute("INSERT INTO profiles (id) VALUES ($1)", ALICE)
    caller = await connect_as(api, role)
    await caller.execute(sql)
