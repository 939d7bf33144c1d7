"""Every test gets its own database, cloned in milliseconds from a migrated template: the core's
tests (tests/) and the app plugin's (handlers/tests/) alike.

The template holds what `jobrunner migrate` creates here: the core's migrations, then those of
every installed plugin, as a daemon started on it expects. With the core alone installed, only
the queue's objects.

The server: DATABASE_URL when set, else PostgreSQL on 127.0.0.1:5432 when one answers, else the
embedded server (the same one `jobrunner demo` uses). Never a mock.

The layers: a test that asks for no database fixture (none that needs `admin_url`) is marked
`unit` unless it runs daemon processes (marked `process` by hand), one that does `database`,
and the deploy-file checks `deploy` as well, so `pytest -m unit` runs in seconds without
PostgreSQL and `pytest` runs everything.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from jobrunner.dsn import parse_database_url
from jobrunner.embedded import EmbeddedPostgres
from jobrunner.logs import configure_logging
from jobrunner.migrate import migrate
from tests.support import database_url_for, quote

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

# The app plugin ships hourly/daily cron schedules; a test daemon started at the top of an hour
# would enqueue one into a test's database. Tests of schedules declare their own. Child daemons
# inherit this.
os.environ.setdefault("JOBRUNNER_PLUGIN_SCHEDULES", "false")
# Likewise the app plugin's metric sampler: a `jobrunner run` child would query the app's tables.
# Tests of samplers pass theirs to the Daemon.
os.environ.setdefault("JOBRUNNER_PLUGIN_SAMPLERS", "false")


# modules that check the deploy files (Prometheus rules with promtool, Grafana, systemd, the
# container and Kubernetes manifests)
DEPLOY_MODULES = {"test_alert_rules", "test_dashboard", "test_deploy_files", "test_systemd"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs_database = "admin_url" in getattr(item, "fixturenames", ())
        if needs_database:
            item.add_marker(pytest.mark.database)
        elif item.get_closest_marker("process") is None:
            item.add_marker(pytest.mark.unit)
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in DEPLOY_MODULES:
            item.add_marker(pytest.mark.deploy)


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    configure_logging("json", "debug")
    explicit = os.environ.get("DATABASE_URL")
    if explicit:
        yield parse_database_url(explicit).url
        return
    if asyncio.run(_answers(LOCAL_SERVER)):
        yield LOCAL_SERVER
        return
    embedded = EmbeddedPostgres(Path(os.environ.get("JOBRUNNER_TEST_EMBEDDED_DIR", "/var/tmp/jobrunner-tests")))
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    name = f"jobrunner_tpl_{os.getpid()}"

    async def create() -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {quote(name)}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(database_url_for(admin_url, name))
        try:
            await migrate(conn, "public")
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def db_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh, migrated database of this test's own."""
    name = f"jobrunner_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {quote(name)} TEMPLATE {quote(template_db)}")
        yield database_url_for(admin_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def empty_db_url(admin_url: str) -> AsyncIterator[str]:
    """URL of a fresh database with no migrations applied."""
    name = f"jobrunner_e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {quote(name)}")
        yield database_url_for(admin_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    assert created is not None
    try:
        yield created
    finally:
        await created.close()
