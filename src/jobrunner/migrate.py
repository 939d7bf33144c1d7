"""Bring a database's schema up to date: numbered migrations once, function files when changed.

Each component (the core, each plugin) ships a `MigrationSet`:

* `migrations/NNNN_name.sql`: numbered migrations, each applied once and never edited
  afterwards. They change tables, indexes, roles, policies, privileges and data.
* `functions/<name>.sql`: the current text of one SQL function with its privileges, written to
  be applied again (CREATE OR REPLACE, REVOKE/GRANT). A file is applied when its checksum
  differs from the one recorded when it was last applied, like Flyway's repeatable migrations.

One run, per component in order (the core first): the pending numbered migrations in order,
then the changed function files. A function file's `-- requires: a, b` line names the files to
apply before it (a SQL-language body is checked when it is created, so what it calls must exist;
list what it calls at run time too, where a migration calls it); otherwise they go by name. A
migration that calls functions says where with a line `-- jobrunner:functions a b`: the files
named there (and those they require) are applied at that line, if changed, so that the statements
after it find the functions' current text. Everything happens in one transaction under an
advisory lock, and the bookkeeping table records each numbered migration and the checksum of
each function file applied.

What a function file cannot do, a numbered migration does: dropping a function that is no longer
in the files, or the old signature of one whose arguments or return type changed (CREATE OR
REPLACE would add an overload, or refuse), is a numbered migration (DROP FUNCTION ...); the
function files run after it.

`migration_script` writes the same run as one SQL script (`jobrunner migrate --sql`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import asyncpg

from jobrunner.migration_statements import MigrationStatements
from jobrunner.plugin_entry_points import entry_points_of
from jobrunner.sql_files import FunctionFile, Migration, function_files, migrations, render, sql_dir
from jobrunner.statements import AsyncExecutor, run

CORE_COMPONENT = "jobrunner"
MIGRATIONS_ENTRY_POINT_GROUP = "jobrunner.migrations"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class MigrationSet:
    """Migrations and function files of one component (the core, or a plugin with its own schema)."""

    component: str
    items: list[Migration]
    functions: list[FunctionFile] = field(default_factory=list)

    @classmethod
    def core(cls) -> MigrationSet:
        return cls.from_directory(CORE_COMPONENT, sql_dir() / "migrations", sql_dir() / "functions")

    @classmethod
    def from_directory(cls, component: str, directory: Path, functions: Path | None = None) -> MigrationSet:
        """The numbered migrations of `directory` (at least one) and the function files of
        `functions`, when given and present."""
        if not directory.is_dir():
            raise MigrationError(f"migrations of {component}: the folder {directory} does not exist")
        items = migrations(directory)
        if not items:
            raise MigrationError(f"migrations of {component}: the folder {directory} holds no NNNN_name.sql file")
        return cls(component, items, function_files(functions) if functions is not None else [])

    @classmethod
    def from_package(
        cls, component: str, package: str, subdirectory: str = "migrations", functions: str = "functions"
    ) -> MigrationSet:
        """Migrations shipped inside a plugin package (`my_plugin/migrations/0001_x.sql`), with the
        function files of the folder beside them (`my_plugin/functions/f.sql`), if any."""
        try:
            root = Path(str(resources.files(package)))
        except ModuleNotFoundError as exc:
            raise MigrationError(f"migrations of {component}: package {package} cannot be imported") from exc
        folder = root / subdirectory
        if not folder.is_dir() or not any(folder.glob("*.sql")):
            raise MigrationError(
                f"migrations of {component}: package {package} has no migration in its folder "
                f"{subdirectory!r} ({folder})"
            )
        return cls.from_directory(component, folder, root / functions)


def discover_migration_sets(group: str = MIGRATIONS_ENTRY_POINT_GROUP) -> list[MigrationSet]:
    """The core's migrations, then each installed plugin's (entry points in `group`, by name).

    A plugin's entry point names a MigrationSet; `{schema}` in its files is jobrunner's schema.
    """
    sets = [MigrationSet.core()]
    for point in sorted(entry_points_of(group), key=lambda p: p.name):
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


# -- the plan: what a run applies, in order ---------------------------------------------------


@dataclass(frozen=True)
class Step:
    """SQL a run executes, bookkeeping included; `name` is what it reports as applied (None for
    the rest of a migration after a `-- jobrunner:functions` line)."""

    name: str | None
    sql: str


@dataclass(frozen=True)
class _Applied:
    migrations: dict[int, str]  # version -> checksum
    functions: dict[str, str]  # name -> checksum


async def _applied(db: AsyncExecutor, statements: MigrationStatements) -> dict[str, _Applied]:
    """What each component has applied (a component missing from it has applied nothing)."""
    if not await run(db, statements.table_exists()):
        return {}
    applied: dict[str, _Applied] = {}
    for row in await run(db, statements.applied()):
        state = applied.setdefault(row["component"], _Applied({}, {}))
        if row["version"] is None:
            state.functions[row["name"]] = row["checksum"]
        else:
            state.migrations[row["version"]] = row["checksum"]
    return applied


def _plan_set(
    statements: MigrationStatements, schema: str, migration_set: MigrationSet, applied: _Applied
) -> list[Step]:
    component = migration_set.component
    by_name = {f.name: f for f in migration_set.functions}
    pending = {f.name for f in migration_set.functions if applied.functions.get(f.name) != f.checksum}
    steps: list[Step] = []

    def apply_functions(names: tuple[str, ...], needed_by: tuple[str, ...] = ()) -> None:
        for name in names:
            if name not in by_name:
                named_by = f"{needed_by[-1]}.sql" if needed_by else "a migration's jobrunner:functions line"
                raise MigrationError(f"{component}: no function file {name}.sql (named by {named_by})")
            if name in needed_by:
                raise MigrationError(f"{component}: function files require each other: {' -> '.join(needed_by)}")
            if name not in pending:
                continue
            function = by_name[name]
            apply_functions(function.requires, (*needed_by, name))
            pending.discard(name)
            record = statements.record_function(component, name, function.checksum)
            steps.append(Step(f"{component}/functions/{name}", f"{function.rendered(schema)}\n{record}"))

    for migration in migration_set.items:
        label = f"{component}/{migration.version:04d}_{migration.name}"
        previous = applied.migrations.get(migration.version)
        if previous is not None:
            if previous != migration.checksum:
                raise MigrationError(
                    f"migration {component} {migration.version:04d}_{migration.name} "
                    "was changed after it was applied; add a new migration instead"
                )
            continue
        parts = migration.parts()
        record = statements.record_migration(component, migration.version, migration.name, migration.checksum)
        for index, part in enumerate(parts):
            if isinstance(part, tuple):
                apply_functions(part)
                continue
            text = render(part, schema)
            if index == len(parts) - 1:
                text = f"{text.rstrip()}\n\n{record}"
            steps.append(Step(label if index == 0 else None, text))
    apply_functions(tuple(sorted(pending)))
    return steps


async def plan_migrations(db: AsyncExecutor, schema: str, sets: list[MigrationSet] | None = None) -> list[Step]:
    """What `migrate` would apply now (`db` may be a connection or a pool)."""
    statements = MigrationStatements(schema)
    applied = await _applied(db, statements)
    steps: list[Step] = []
    for migration_set in discover_migration_sets() if sets is None else sets:
        steps += _plan_set(statements, schema, migration_set, applied.get(migration_set.component) or _Applied({}, {}))
    return steps


def plan_for_empty_database(schema: str, sets: list[MigrationSet] | None = None) -> list[Step]:
    statements = MigrationStatements(schema)
    return [
        step
        for migration_set in (discover_migration_sets() if sets is None else sets)
        for step in _plan_set(statements, schema, migration_set, _Applied({}, {}))
    ]


async def migrate(conn: asyncpg.Connection, schema: str, sets: list[MigrationSet] | None = None) -> list[str]:
    """Apply what is missing or changed; return the names applied. Safe to run from many
    replicas at once.

    One transaction for the whole run, holding a transaction-level advisory lock: replicas wait
    for each other, it works through a transaction pooler, and a failing migration leaves the
    database as it was before the run.
    """
    statements = MigrationStatements(schema)
    async with conn.transaction():
        await run(conn, statements.lock())
        await run(conn, statements.create_table())
        steps = await plan_migrations(conn, schema, sets)
        for step in steps:
            await conn.execute(step.sql)
    return [step.name for step in steps if step.name is not None]


def migration_script(schema: str, steps: list[Step]) -> str:
    """`steps` as the one script `migrate` runs: BEGIN, the lock, the bookkeeping table, each
    step, COMMIT. Empty when there is nothing to apply."""
    if not steps:
        return ""
    statements = MigrationStatements(schema)
    body = "\n\n".join(
        (f"-- == {step.name} " + "=" * max(3, 90 - len(step.name)) + "\n" if step.name else "") + step.sql.strip()
        for step in steps
    )
    return f"BEGIN;\n\n{statements.lock().sql}\n\n{statements.create_table().sql}\n\n{body}\n\nCOMMIT;\n"


async def pending_migrations(db: AsyncExecutor, schema: str, sets: list[MigrationSet] | None = None) -> list[str]:
    """Names of the numbered migrations not yet applied and of the function files changed since
    they were applied (for readiness checks and `status`). `db` may be a connection or a pool."""
    sets = discover_migration_sets() if sets is None else sets
    applied_by_component = await _applied(db, MigrationStatements(schema))
    missing: list[str] = []
    for migration_set in sets:
        applied = applied_by_component.get(migration_set.component) or _Applied({}, {})
        missing += [
            f"{migration_set.component}/{m.version:04d}_{m.name}"
            for m in migration_set.items
            if m.version not in applied.migrations
        ]
        missing += [
            f"{migration_set.component}/functions/{f.name}"
            for f in migration_set.functions
            if applied.functions.get(f.name) != f.checksum
        ]
    return missing
