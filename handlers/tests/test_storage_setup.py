"""The app's Storage set-up (functions/setup_app_storage.sql) on a stand-in of Supabase's `storage`
schema: the backend document's buckets with their limits, one set of names shared with the
settings, and policies that keep each user inside their own `<user id>/` folder, tried as the
roles the Storage API runs requests as."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from handlers.tests.api_roles import ApiRoles, LoginRole
from handlers.tests.test_schema import ALICE, BOB
from jobrunner.migrate import migrate
from jobrunner_handlers import buckets
from jobrunner_handlers.settings import AppSettings

STAND_IN = Path(__file__).with_name("storage_stand_in.sql")
INSERT_OBJECT = "INSERT INTO storage.objects (bucket_id, name) VALUES ($1, $2)"


@pytest.fixture
async def storage_db(empty_db_url: str) -> AsyncIterator[str]:
    """A database with Storage's schema (the stand-in), then migrated as a Supabase project would be."""
    conn = await asyncpg.connect(empty_db_url)
    try:
        await conn.execute(STAND_IN.read_text())
        await migrate(conn, "public")
    finally:
        await conn.close()
    yield empty_db_url


@pytest.fixture
async def admin(storage_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(storage_db)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def storage_api(storage_db: str, login_role: LoginRole) -> AsyncIterator[ApiRoles]:
    roles = ApiRoles(storage_db, login_role)
    try:
        yield roles
    finally:
        await roles.close()


async def test_the_migration_creates_the_documents_buckets(admin: asyncpg.Connection) -> None:
    rows = await admin.fetch(
        "SELECT id, name, public, file_size_limit, allowed_mime_types FROM storage.buckets ORDER BY id"
    )
    assert {r["id"]: (r["name"], r["public"], r["file_size_limit"], r["allowed_mime_types"]) for r in rows} == {
        "user-uploads": ("user-uploads", False, 5 * 1024 * 1024, list(buckets.IMAGE_CONTENT_TYPES)),
        "analyses": ("analyses", False, None, None),
        "avatars": ("avatars", False, None, None),
        "archive": ("archive", False, None, ["application/gzip"]),
    }
    # one set of names: the module, the settings' defaults, the upload rows' bucket list
    assert {r["id"] for r in rows} == {*buckets.USER_BUCKETS, buckets.ARCHIVE}
    defaults = AppSettings.model_construct()
    assert (defaults.uploads_bucket, defaults.archive_bucket, defaults.thumbnails_bucket) == (
        buckets.USER_UPLOADS,
        buckets.ARCHIVE,
        None,
    )
    assert defaults.max_download_bytes == buckets.USER_UPLOADS_MAX_BYTES
    assert [r["bucket"] for r in await admin.fetch("SELECT bucket FROM user_upload_buckets")] == [buckets.USER_UPLOADS]
    policies = await admin.fetch(
        "SELECT policyname, cmd, roles::text[] AS roles FROM pg_policies "
        "WHERE schemaname = 'storage' AND tablename = 'objects' ORDER BY policyname"
    )
    assert [(p["policyname"], p["cmd"], p["roles"]) for p in policies] == [
        ("app_users_add_own_files", "INSERT", ["authenticated"]),
        ("app_users_delete_own_files", "DELETE", ["authenticated"]),
        ("app_users_read_own_files", "SELECT", ["authenticated"]),
        ("app_users_replace_own_files", "UPDATE", ["authenticated"]),
    ]


async def test_setting_up_again_restores_the_limits_and_keeps_one_set_of_policies(admin: asyncpg.Connection) -> None:
    await admin.execute(
        "UPDATE storage.buckets SET file_size_limit = 1073741824, public = true WHERE id = 'user-uploads'"
    )
    await admin.execute(STAND_IN.read_text())  # present already: the stand-in changes nothing
    assert await admin.fetchval("SELECT setup_app_storage()") == ["user-uploads", "analyses", "avatars", "archive"]
    assert await admin.fetchrow("SELECT file_size_limit, public FROM storage.buckets WHERE id = 'user-uploads'") == (
        5 * 1024 * 1024,
        False,
    )
    assert await admin.fetchval("SELECT count(*) FROM pg_policies WHERE schemaname = 'storage'") == 4


async def test_without_storage_there_is_nothing_to_set_up(conn: asyncpg.Connection) -> None:
    # the tests' template: plain PostgreSQL, no `storage` schema
    assert await conn.fetchval("SELECT to_regnamespace('storage')") is None
    assert await conn.fetchval("SELECT setup_app_storage()") == []


@pytest.mark.parametrize("bucket", buckets.USER_BUCKETS)
async def test_users_read_and_write_only_in_their_own_folder(
    storage_api: ApiRoles, admin: asyncpg.Connection, bucket: str
) -> None:
    await admin.execute(INSERT_OBJECT, bucket, f"{BOB}/selfie.jpg")  # Bob's, stored earlier
    alice = await storage_api.user(ALICE)
    await alice.execute(INSERT_OBJECT, bucket, f"{ALICE}/2025/selfie.jpg")
    assert [r["name"] for r in await alice.fetch("SELECT name FROM storage.objects")] == [f"{ALICE}/2025/selfie.jpg"]

    refused = [
        (bucket, f"{BOB}/mine-now.jpg"),  # another user's folder
        (bucket, f"{ALICE}/../{BOB}/x.jpg"),  # climbing out of her own
        (bucket, f"{ALICE}/%2e%2e/{BOB}/x.jpg"),
        (bucket, f"{ALICE}//x.jpg"),
        (bucket, f"{ALICE}/a\nb.jpg"),
        (bucket, "selfie.jpg"),  # no folder at all
        (bucket, f"/{ALICE}/x.jpg"),
        (buckets.ARCHIVE, f"{ALICE}/x.jpg"),  # the archive is the service key's
    ]
    for target_bucket, name in refused:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await alice.execute(INSERT_OBJECT, target_bucket, name)
    # Bob's object: invisible, and neither replaced nor deleted
    assert await alice.execute("UPDATE storage.objects SET metadata = '{}' WHERE name LIKE $1", f"{BOB}/%") == (
        "UPDATE 0"
    )
    assert await alice.execute("DELETE FROM storage.objects WHERE name LIKE $1", f"{BOB}/%") == "DELETE 0"
    # her own may be replaced in place, not moved into Bob's folder
    assert await alice.execute("UPDATE storage.objects SET metadata = '{\"size\": 1}'") == "UPDATE 1"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await alice.execute("UPDATE storage.objects SET name = $1", f"{BOB}/selfie2.jpg")
    assert await alice.execute("DELETE FROM storage.objects") == "DELETE 1"
    assert await admin.fetchval("SELECT string_agg(name, ',') FROM storage.objects") == f"{BOB}/selfie.jpg"

    # the JWT claim as older PostgREST sets it identifies the user the same way
    bob = await storage_api.user(BOB, legacy=True)
    assert [r["name"] for r in await bob.fetch("SELECT name FROM storage.objects")] == [f"{BOB}/selfie.jpg"]


async def test_anon_gets_nothing_and_the_service_key_everything(
    storage_api: ApiRoles, admin: asyncpg.Connection
) -> None:
    await admin.execute(INSERT_OBJECT, buckets.USER_UPLOADS, f"{ALICE}/selfie.jpg")
    anon = await storage_api.anon()
    assert await anon.fetch("SELECT * FROM storage.objects") == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await anon.execute(INSERT_OBJECT, buckets.USER_UPLOADS, f"{ALICE}/x.jpg")
    # the worker's Storage client uses the service key: thumbnails, the archive, cleanup
    service = await storage_api.service_role()
    await service.execute(INSERT_OBJECT, buckets.ARCHIVE, "glow_analyses/glow_analyses_p2024_01.jsonl.gz")
    await service.execute(INSERT_OBJECT, buckets.USER_UPLOADS, f"{ALICE}/selfie.thumb_256.webp")
    assert await service.fetchval("SELECT count(*) FROM storage.objects") == 3
    # a user without a JWT sub (auth.uid() is NULL) matches no folder
    nobody = await storage_api.user(uuid.UUID(int=0))
    await nobody.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"authenticated\"}', false)")
    assert await nobody.fetch("SELECT * FROM storage.objects") == []
