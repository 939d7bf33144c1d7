"""Fixtures of the app plugin's tests: a local Storage server and the plugin's settings pointing at
it, and connections as Supabase's API roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from handlers.tests.api_roles import ApiRoles, LoginRole
from handlers.tests.fake_storage import FakeStorage
from jobrunner_handlers.settings import app_settings
from tests.test_security import login_role

__all__ = ["login_role"]  # a fixture (tests/test_security.py), used by `api` and by the tests

_APP_VARIABLES = [
    "OPENAI_API_KEY",
    "EXPO_PUBLIC_OPENAI_API_KEY",
    "SUPABASE_URL",
    "EXPO_PUBLIC_SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "EXPO_ACCESS_TOKEN",
]


@pytest.fixture
def clean_app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No app setting from the outer environment; settings re-read on first use."""
    import os

    for name in list(os.environ):
        if name.startswith("JOBRUNNER_APP_") or name in _APP_VARIABLES:
            monkeypatch.delenv(name)
    app_settings.cache_clear()
    yield monkeypatch
    app_settings.cache_clear()


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    server = FakeStorage().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def app_env(clean_app_env: pytest.MonkeyPatch, storage: FakeStorage) -> FakeStorage:
    """The plugin configured for the local Storage server (http and loopback allowed: tests only)."""
    clean_app_env.setenv("SUPABASE_URL", storage.url)
    clean_app_env.setenv("SUPABASE_SERVICE_ROLE_KEY", storage.service_key)
    clean_app_env.setenv("JOBRUNNER_APP_ALLOW_PRIVATE_NETWORK", "true")
    return storage


@pytest.fixture
async def api(db_url: str, login_role: LoginRole) -> AsyncIterator[ApiRoles]:
    """Connections to this test's database as Supabase's API roles (handlers/tests/api_roles.py)."""
    roles = ApiRoles(db_url, login_role)
    try:
        yield roles
    finally:
        await roles.close()
