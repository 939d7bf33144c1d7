"""The Storage client against a local server speaking Supabase Storage's wire format; SSRF refusals."""

from __future__ import annotations

import pytest

from handlers.tests.fake_storage import FakeStorage
from jobrunner import RetryLater
from jobrunner_handlers.settings import AppSettings, app_settings
from jobrunner_handlers.storage import StorageClient, StorageRefused, StorageUnavailable

MIB = 1024 * 1024
JPEG_MAGIC = b"\xff\xd8\xff\xe0fake-jpeg-bytes"


def client_for(storage: FakeStorage, **options: object) -> StorageClient:
    return StorageClient(storage.url, storage.service_key, allow_private_network=True, **options)  # type: ignore[arg-type]


async def test_download_upload_list_and_delete_round_trip(storage: FakeStorage) -> None:
    storage.put("uploads", "u1/a b.jpg", JPEG_MAGIC)
    async with client_for(storage) as client:
        downloaded = await client.download("uploads", "u1/a b.jpg")
        assert downloaded.data == JPEG_MAGIC and downloaded.content_type == "image/jpeg"
        assert await client.upload("uploads", "u1/sub/t.webp", b"RIFF....WEBP", "image/webp") == "uploads/u1/sub/t.webp"
        listed = await client.list_objects("uploads", "u1")
        assert [(item["name"], item["id"] is None) for item in listed] == [("a b.jpg", False), ("sub", True)]
        assert listed[0]["metadata"]["size"] == len(JPEG_MAGIC)
        assert sorted(await client.remove("uploads", ["u1/a b.jpg", "u1/sub/t.webp", "u1/missing.jpg"])) == [
            "u1/a b.jpg",
            "u1/sub/t.webp",
        ]
    assert storage.paths("uploads") == []
    assert ("GET", "/storage/v1/object/uploads/u1/a%20b.jpg") in storage.requests


async def test_object_urls_on_the_storage_host_map_to_bucket_and_path(storage: FakeStorage) -> None:
    storage.put("uploads", "u1/p.png", b"\x89PNG....", "image/png")
    async with client_for(storage) as client:
        for kind in ("public/", "authenticated/", "sign/", ""):
            url = f"{storage.url}/storage/v1/object/{kind}uploads/u1/p.png?token=abc"
            assert client.parse_object_url(url) == ("uploads", "u1/p.png")
        assert (await client.download_url(f"{storage.url}/storage/v1/object/public/uploads/u1/p.png")).data
        with pytest.raises(StorageRefused, match="not a Storage object URL"):
            client.parse_object_url(f"{storage.url}/rest/v1/profiles")
        with pytest.raises(StorageRefused, match=r"'\.\.' segment"):
            client.parse_object_url(f"{storage.url}/storage/v1/object/uploads/u1/../../etc/passwd")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/storage/v1/object/uploads/u1/p.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:1/storage/v1/object/uploads/u1/p.png",  # same address, another port
    ],
)
async def test_urls_on_any_other_host_are_refused_without_a_request(storage: FakeStorage, url: str) -> None:
    async with client_for(storage) as client:
        with pytest.raises(StorageRefused, match="only the configured Storage host"):
            await client.download_url(url)
    assert storage.requests == []


async def test_the_metadata_address_is_refused_even_with_the_test_flag() -> None:
    async with StorageClient("http://169.254.169.254", "key", allow_private_network=True) as client:
        with pytest.raises(StorageRefused, match=r"169\.254\.169\.254 is a link-local address"):
            await client.download("uploads", "u1/p.png")
    async with StorageClient("https://169.254.169.254", "key") as client:
        with pytest.raises(StorageRefused, match="link-local"):
            await client.download("uploads", "u1/p.png")


async def test_loopback_and_private_hosts_are_refused_outside_tests(storage: FakeStorage) -> None:
    for base in (f"https://127.0.0.1:{storage.port}", f"https://localhost:{storage.port}", "https://10.1.2.3"):
        async with StorageClient(base, storage.service_key) as client:
            with pytest.raises(StorageRefused, match="private or loopback"):
                await client.download("uploads", "u1/p.png")
    assert storage.requests == []


def test_plain_http_is_refused_unless_the_test_flag_is_on(storage: FakeStorage) -> None:
    with pytest.raises(StorageRefused, match="not https"):
        StorageClient(storage.url, storage.service_key)
    with pytest.raises(StorageRefused, match="not an http"):
        StorageClient("file:///etc/passwd", storage.service_key, allow_private_network=True)


async def test_redirects_to_another_host_are_refused_and_same_host_ones_followed(storage: FakeStorage) -> None:
    storage.put("uploads", "u1/real.jpg", JPEG_MAGIC)
    storage.redirects["/storage/v1/object/uploads/u1/elsewhere.jpg"] = "http://169.254.169.254/latest/meta-data/"
    storage.redirects["/storage/v1/object/uploads/u1/other.jpg"] = f"http://127.0.0.2:{storage.port}/x.jpg"
    storage.redirects["/storage/v1/object/uploads/u1/moved.jpg"] = "/storage/v1/object/uploads/u1/real.jpg"
    async with client_for(storage) as client:
        with pytest.raises(StorageRefused, match=r"refusing the redirect to 169\.254\.169\.254"):
            await client.download("uploads", "u1/elsewhere.jpg")
        with pytest.raises(StorageRefused, match=r"refusing the redirect to 127\.0\.0\.2"):
            await client.download("uploads", "u1/other.jpg")
        assert (await client.download("uploads", "u1/moved.jpg")).data == JPEG_MAGIC


@pytest.mark.parametrize("declare_length", [True, False])
async def test_bodies_over_the_cap_are_refused(storage: FakeStorage, declare_length: bool) -> None:
    storage.put("uploads", "u1/big.jpg", b"\xff" * (5 * MIB + 1), declare_length=declare_length)
    storage.put("uploads", "u1/limit.jpg", b"\xff" * (5 * MIB), declare_length=declare_length)
    async with client_for(storage) as client:
        with pytest.raises(StorageRefused, match="over the 5242880-byte limit"):
            await client.download("uploads", "u1/big.jpg")
        assert len((await client.download("uploads", "u1/limit.jpg")).data) == 5 * MIB


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/octet-stream"])
async def test_non_image_content_types_are_refused(storage: FakeStorage, content_type: str) -> None:
    storage.put("uploads", "u1/page", b"<html></html>", content_type)
    async with client_for(storage) as client:
        with pytest.raises(StorageRefused, match="is not an accepted image type"):
            await client.download("uploads", "u1/page")


async def test_error_answers_become_permanent_or_retryable_errors(storage: FakeStorage) -> None:
    async with client_for(storage) as client:
        with pytest.raises(StorageRefused, match="does not exist"):
            await client.download("uploads", "u1/missing.jpg")
        storage.fail_with["GET"] = (429, {"retry-after": "17"})
        with pytest.raises(RetryLater) as retry:
            await client.download("uploads", "u1/x.jpg")
        assert retry.value.seconds == 17
        storage.fail_with["GET"] = (503, {})
        with pytest.raises(StorageUnavailable, match="503"):
            await client.download("uploads", "u1/x.jpg")
    async with StorageClient(storage.url, "wrong-key", allow_private_network=True) as client:
        with pytest.raises(StorageRefused, match="invalid signature"):
            await client.remove("uploads", ["u1/x.jpg"])


def test_settings_honour_the_apps_variable_names(clean_app_env: pytest.MonkeyPatch) -> None:
    assert AppSettings().storage_problem() == "SUPABASE_URL is not set (the Supabase project URL, for Storage)"
    clean_app_env.setenv("EXPO_PUBLIC_SUPABASE_URL", "https://proj.supabase.co/")
    assert (
        AppSettings().storage_problem() == "SUPABASE_SERVICE_ROLE_KEY is not set (Storage needs the service-role key)"
    )
    clean_app_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "k")
    clean_app_env.setenv("EXPO_PUBLIC_OPENAI_API_KEY", "sk-public")
    settings = app_settings()
    assert settings.supabase_url == "https://proj.supabase.co" and settings.storage_problem() is None
    assert settings.openai_key_is_public and settings.openai_problem() is None
    clean_app_env.setenv("OPENAI_API_KEY", "sk-server")
    settings = AppSettings()
    assert not settings.openai_key_is_public
    assert settings.effective_openai_api_key is not None
    assert settings.effective_openai_api_key.get_secret_value() == "sk-server"
    assert "sk-server" not in repr(settings)
    assert (settings.unused_upload_days, settings.ai_cache_ttl_seconds, settings.archive_retention_days) == (
        90,
        3600.0,
        365,
    )
    clean_app_env.setenv("JOBRUNNER_APP_ARCHIVE_RETENTION_DAYS", "off")
    assert AppSettings().archive_retention_days is None
