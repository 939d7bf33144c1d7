"""Apply the numbered migrations in `sql/migrations`, once, under an advisory lock."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

import asyncpg

from jobrunner.sql_files import Migration, Queries, migrations

CORE_COMPONENT = "jobrunner"
MIGRATIONS_ENTRY_POINT_GROUP = "jobrunner.migrations"


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

    @classmethod
    def from_package(cls, component: str, package: str, subdirectory: str = "migrations") -> MigrationSet:
        """Migrations shipped inside a plugin package (e.g. `my_plugin/migrations/0001_x.sql`)."""
        return cls.from_directory(component, Path(str(resources.files(package))) / subdirectory)


class MigrationError(RuntimeError):
    pass


def discover_migration_sets(group: str = MIGRATIONS_ENTRY_POINT_GROUP) -> list[MigrationSet]:
    """The core's migrations, then each installed plugin's (entry points in `group`, by name).

    A plugin's entry point names a MigrationSet; `{schema}` in its files is jobrunner's schema.
    """
    sets = [MigrationSet.core()]
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        try:
            loaded = point.load()
        except Exception as exc:
            raise MigrationError(f"cannot load migrations entry point {point.name} ({point.value}): {exc}") from exc
        if not isinstance(loaded, MigrationSet):
            raise MigrationError(f"migrations entry point {point.name} ({point.value}) is not a MigrationSet")
        if loaded.component == CORE_COMPONENT:
            raise MigrationError(f"migrations entry point {point.name} uses the reserved component name")
        sets.append(loaded)
    return sets


async def migrate(conn: asyncpg.Connection, schema: str, sets: list[MigrationSet] | None = None) -> list[str]:
    """Apply what is missing; return the names applied. Safe to run from many replicas at once.

    One transaction for the whole run, holding a transaction-level advisory lock: replicas wait
    for each other, it works through a transaction pooler, and a failing migration leaves the
    database as it was before the run.
    """
    queries = Queries(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute(queries.migration_lock)
        await conn.execute(queries.create_migrations_table)
        for migration_set in discover_migration_sets() if sets is None else sets:
            applied_now += await _apply_set(conn, queries, schema, migration_set)
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
    sets = discover_migration_sets() if sets is None else sets
    if not await conn.fetchval(queries.migrations_table_exists):
        return [f"{s.component}/{m.version:04d}_{m.name}" for s in sets for m in s.items]
    missing: list[str] = []
    for migration_set in sets:
        done = {r["version"] for r in await conn.fetch(queries.applied_migrations, migration_set.component)}
        missing += [
            f"{migration_set.component}/{m.version:04d}_{m.name}" for m in migration_set.items if m.version not in done
        ]
    return missing
