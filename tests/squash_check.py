"""One-off proof that the squashed baselines build the schema the migrations they replace built.

    .venv/bin/python -m tests.squash_check [COMMIT] [DATABASE_URL]

Migrates one new database with the migration files of COMMIT (default 44056e7, the last commit
with the 15 core and 8 app migrations) and another with the current baselines and function
files, then compares their catalogs (tests/schema_catalog.py). Prints the differences; exits 1
when there are any.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg

from jobrunner.migrate import MigrationSet, discover_migration_sets, migrate
from tests.schema_catalog import schema_differences, schema_snapshot

FOLDERS = {"jobrunner": "sql/migrations", "jobrunner_app": "handlers/jobrunner_handlers/migrations"}


def sets_at(commit: str, root: Path) -> list[MigrationSet]:
    sets = []
    for component, folder in FOLDERS.items():
        names = subprocess.run(
            ["git", "ls-tree", "--name-only", f"{commit}:{folder}"], check=True, capture_output=True, text=True
        ).stdout.split()
        target = root / component
        target.mkdir()
        for name in names:
            text = subprocess.run(
                ["git", "show", f"{commit}:{folder}/{name}"], check=True, capture_output=True, text=True
            )
            (target / name).write_text(text.stdout)
        sets.append(MigrationSet.from_directory(component, target))
    return sets


# as on Supabase: the API roles get every new table, function and sequence of public by default
SUPABASE_DEFAULTS = """
GRANT USAGE ON SCHEMA public TO anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated;
"""


async def build(admin_url: str, name: str, sets: list[MigrationSet], supabase: bool) -> dict:
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    conn = await asyncpg.connect(admin_url.rsplit("/", 1)[0] + "/" + name)
    try:
        if supabase:
            await conn.execute(SUPABASE_DEFAULTS)
        await migrate(conn, "public", sets)
        return await schema_snapshot(conn)
    finally:
        await conn.close()


async def main(commit: str, admin_url: str) -> int:
    failed = 0
    for supabase in (False, True):
        print("with Supabase's default privileges:" if supabase else "plain PostgreSQL:")
        failed |= await compare(commit, admin_url, supabase)
    return failed


async def compare(commit: str, admin_url: str, supabase: bool) -> int:
    suffix = uuid.uuid4().hex[:8]
    names = (f"squash_old_{suffix}", f"squash_new_{suffix}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            old = await build(admin_url, names[0], sets_at(commit, Path(tmp)), supabase)
        new = await build(admin_url, names[1], discover_migration_sets(), supabase)
    finally:
        admin = await asyncpg.connect(admin_url)
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    differences = schema_differences(old, new, (f"the migrations of {commit}", "the baselines"))
    counts = ", ".join(f"{len(rows)} {kind}" for kind, rows in sorted(new.items()))
    print(f"compared: {counts}")
    print("\n".join(differences) if differences else "no difference")
    return 1 if differences else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(
        asyncio.run(
            main(
                args[0] if args else "44056e7", args[1] if len(args) > 1 else "postgresql://postgres@127.0.0.1/postgres"
            )
        )
    )
