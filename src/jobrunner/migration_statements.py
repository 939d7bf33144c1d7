"""The statements of the migration bookkeeping (table jobrunner_migrations, run by
jobrunner.migrate), each defined once (jobrunner.statements). The two that record what was
applied are not run on their own: each is written into the text of the step it records, so that
a step and its record are one statement, in `migrate` and in `jobrunner migrate --sql` alike."""

from __future__ import annotations

from jobrunner.sql_files import Queries, bind
from jobrunner.statements import Returns, Row, Statement


class MigrationStatements:
    """The statements for one schema: `MigrationStatements("public").applied()`."""

    __slots__ = ("queries",)

    def __init__(self, schema: str) -> None:
        self.queries = Queries(schema)

    def lock(self) -> Statement[None]:
        """The advisory lock a migration run holds until its transaction ends."""
        return Statement(self.queries.migration_lock, (), Returns.NOTHING, _nothing)

    def create_table(self) -> Statement[None]:
        """The schema and the bookkeeping table, if missing (several statements, no arguments)."""
        return Statement(self.queries.create_migrations_table, (), Returns.NOTHING, _nothing)

    def table_exists(self) -> Statement[bool]:
        return Statement(self.queries.migrations_table_exists, (), Returns.VALUE, bool)

    def applied(self) -> Statement[list[Row]]:
        """(component, version, name, checksum) rows; version is None for a function file."""
        return Statement(self.queries.applied, (), Returns.ROWS)

    def record_migration(self, component: str, version: int, name: str, checksum: str) -> str:
        """The row of an applied numbered migration, as text to end the migration's step."""
        return bind(self.queries.record_migration, component, version, name, checksum)

    def record_function(self, component: str, name: str, checksum: str) -> str:
        """The checksum of an applied function file, as text to end the function's step."""
        return bind(self.queries.record_function, component, name, checksum)


def _nothing(_result: object) -> None:
    return None
