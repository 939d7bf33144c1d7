"""Apply the numbered migrations in `sql/migrations`, once, under an advisory lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from jobrunner.sql_files import Migration, Queries, migrations

CORE_COMPONENT = "jobrunner"


@dataclass(frozen=True)
class MigrationSet:
    """Migrations of one component (the core, or a handler plugin with its own schema)."""

    component: str
    items: list[Migration]

    @classmethod
    def core(cls) -> MigrationSet:
        return cls(CORE_COMPONENT, migrations())

    @classmethod
    def from_directory(cls, component: str, directory: Path) -> MigrationSet:
        return cls(component, migrations(directory))


class MigrationError(RuntimeError):
    pass


async def migrate(conn: asyncpg.Connection, schema: str, sets: list[MigrationSet] | None = None) -> list[str]:
    """Apply what is missing; return the names applied. Safe to run from many replicas at once."""
    queries = Queries(schema)
    applied_now: list[str] = []
    await conn.execute(queries.migration_lock)
    try:
        await conn.execute(queries.create_migrations_table)
        for migration_set in sets or [MigrationSet.core()]:
            applied_now += await _apply_set(conn, queries, schema, migration_set)
    finally:
        await conn.execute(queries.migration_unlock)
    return applied_now


async def _apply_set(conn: asyncpg.Connection, queries: Queries, schema: str, migration_set: MigrationSet) -> list[str]:
    done = {row["version"]: row for row in await conn.fetch(queries.applied_migrations, migration_set.component)}
    applied: list[str] = []
    for migration in migration_set.items:
        previous = done.get(migration.version)
        if previous is not None:
            if previous["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration_set.component} {migration.version:04d}_{migration.name} "
                    "was changed after it was applied; add a new migration instead"
                )
            continue
        async with conn.transaction():
            await conn.execute(migration.rendered(schema))
            await conn.execute(
                queries.record_migration,
                migration_set.component,
                migration.version,
                migration.name,
                migration.checksum,
            )
        applied.append(f"{migration_set.component}/{migration.version:04d}_{migration.name}")
    return applied


async def pending_migrations(
    conn: asyncpg.Connection, schema: str, sets: list[MigrationSet] | None = None
) -> list[str]:
    """Names of migrations not yet applied (for readiness checks and `status`)."""
    queries = Queries(schema)
    if not await conn.fetchval(queries.migrations_table_exists):
        return [f"{s.component}/{m.version:04d}_{m.name}" for s in sets or [MigrationSet.core()] for m in s.items]
    missing: list[str] = []
    for migration_set in sets or [MigrationSet.core()]:
        done = {r["version"] for r in await conn.fetch(queries.applied_migrations, migration_set.component)}
        missing += [
            f"{migration_set.component}/{m.version:04d}_{m.name}" for m in migration_set.items if m.version not in done
        ]
    return missing
