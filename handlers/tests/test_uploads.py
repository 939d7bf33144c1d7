"""process_upload through the real daemon against the local Storage server."""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any

import asyncpg
import pytest
from PIL import Image

from handlers.tests.fake_storage import FakeStorage
from handlers.tests.test_schema import ALICE
from jobrunner_handlers.settings import app_settings
from jobrunner_handlers.thumbnails import NotAnAcceptedImage, make_thumbnails
from jobrunner_handlers.uploads import process_upload
from tests.support import job_row, running_daemon


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 90)).save(out, format="JPEG", quality=85)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


async def run_upload(db_url: str, conn: asyncpg.Connection, path: str) -> dict[str, Any]:
    job_id = await conn.fetchval(
        "SELECT enqueue_job('process_upload', $1::jsonb)", json.dumps({"user_id": str(ALICE), "path": path})
    )
    async with running_daemon(db_url, [process_upload], burst=True):
        pass
    return dict(await job_row(conn, job_id))


async def test_thumbnails_are_stored_next_to_the_original_and_recorded(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    path = f"{ALICE}/2025/selfie.jpg"
    app_env.put("user-uploads", path, jpeg(1600, 1200))
    job = await run_upload(db_url, conn, path)
    assert job["status"] == "completed", job["last_error"]
    assert app_env.paths("user-uploads") == sorted(
        [path, f"{ALICE}/2025/selfie.thumb_256.webp", f"{ALICE}/2025/selfie.thumb_1024.webp"]
    )
    stored = app_env.get("user-uploads", f"{ALICE}/2025/selfie.thumb_256.webp")
    assert stored is not None and stored.content_type == "image/webp"
    with Image.open(io.BytesIO(stored.data)) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (256, 192))
    row = await conn.fetchrow("SELECT * FROM progress_photos WHERE storage_path = $1", path)
    assert (row["user_id"], row["width"], row["height"], row["content_type"]) == (ALICE, 1600, 1200, "image/jpeg")
    assert [(t["size"], t["width"], t["height"]) for t in json.loads(row["thumbnails"])] == [
        (256, 256, 192),
        (1024, 1024, 768),
    ]
    # a second run (a retry, a duplicate event) records the same row again, not a new one
    again = await run_upload(db_url, conn, path)
    assert again["status"] == "completed"
    assert await conn.fetchval("SELECT count(*) FROM progress_photos") == 1
    assert json.loads(again["result"])["photo_id"] == str(row["id"])


@pytest.mark.parametrize(
    ("data", "content_type", "error"),
    [
        (png_claiming(30_000, 30_000), "image/png", "decompression bomb"),
        (png_claiming(6_300, 6_300), "image/png", "over the 24000000-pixel limit"),
        (b"%PDF-1.7 not an image at all", "image/jpeg", "not an image in an accepted format"),
        (b"<html>hello</html>", "text/html", "content type 'text/html' is not an accepted image type"),
        (b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024), "image/jpeg", "over the 5242880-byte limit"),
    ],
    ids=["decompression-bomb", "over-the-pixel-cap", "not-an-image", "html", "over-5-mb"],
)
async def test_unacceptable_uploads_fail_without_retry(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, data: bytes, content_type: str, error: str
) -> None:
    path = f"{ALICE}/bad.upload"
    app_env.put("user-uploads", path, data, content_type)
    job = await run_upload(db_url, conn, path)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert error in job["last_error"]
    assert app_env.paths("user-uploads") == [path]
    assert await conn.fetchval("SELECT count(*) FROM progress_photos") == 0


def test_bombs_are_refused_from_the_header_before_decoding() -> None:
    # under Pillow's own threshold, over ours
    with pytest.raises(NotAnAcceptedImage, match="over the 1000000-pixel limit"):
        make_thumbnails(png_claiming(2_000, 2_000), [256], max_pixels=1_000_000)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillows_own_bomb_guard_is_an_error_too() -> None:
    # past our limit check (set very high), Pillow's guard (2 x MAX_IMAGE_PIXELS) still refuses it
    with pytest.raises(NotAnAcceptedImage, match="decompression bomb"):
        make_thumbnails(png_claiming(20_000, 20_000), [256], max_pixels=10**12)
    # between MAX_IMAGE_PIXELS and twice it Pillow only warns: the warning is an error here
    with pytest.raises(NotAnAcceptedImage, match="decompression bomb"):
        make_thumbnails(png_claiming(7_000, 7_000), [256], max_pixels=10**12)


async def test_paths_outside_the_users_folder_and_missing_configuration(
    db_url: str, conn: asyncpg.Connection, clean_app_env: pytest.MonkeyPatch
) -> None:
    job = await run_upload(db_url, conn, f"{ALICE}/x.jpg")
    assert job["status"] == "failed"
    assert "Supabase Storage is not configured: SUPABASE_URL is not set" in job["last_error"]
    clean_app_env.setenv("SUPABASE_URL", "https://proj.supabase.co")
    clean_app_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "k")
    app_settings.cache_clear()  # settings are read once per process
    job = await run_upload(db_url, conn, "someone-else/x.jpg")
    assert "is not in the user's folder" in job["last_error"]


def _thumb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("mode", "image_format", "size", "expected_mode"),
    [
        ("RGB", "JPEG", (4000, 3000), "RGB"),  # decoded at a reduced DCT scale
        ("RGBA", "PNG", (3000, 2000), "RGBA"),  # reduced a band at a time
        ("RGB", "PNG", (3000, 2000), "RGB"),
        ("L", "PNG", (2000, 3000), "RGB"),
        ("P", "GIF", (2100, 1400), "RGB"),
        ("1", "PNG", (800, 600), "RGB"),  # smaller than the largest box: never enlarged
    ],
)
def test_thumbnails_of_every_mode_keep_the_shape_and_the_alpha(
    mode: str, image_format: str, size: tuple[int, int], expected_mode: str
) -> None:
    image = Image.new("RGBA" if mode == "RGBA" else "RGB", size, (200, 120, 90, 255)[: 4 if mode == "RGBA" else 3])
    if mode == "RGBA":
        image.putpixel((0, 0), (0, 0, 0, 0))
    out = io.BytesIO()
    image.convert(mode).save(out, format=image_format)
    summary = make_thumbnails(out.getvalue(), [256, 1024])
    assert (summary.format, summary.width, summary.height) == (image_format, *size)
    for thumb in summary.thumbnails:
        expected = (size[0], size[1]) if max(size) <= thumb.size else None
        decoded = _thumb(thumb.data)
        assert decoded.format == "WEBP" and decoded.mode == expected_mode
        assert (decoded.width, decoded.height) == (thumb.width, thumb.height)
        assert max(decoded.size) == (max(size) if expected else thumb.size)
        ratio = size[0] / size[1]
        assert abs(decoded.width / decoded.height - ratio) < 0.02
        # the colour survives the reduction
        got = decoded.convert("RGB").getpixel((decoded.width // 2, decoded.height // 2))
        want = _thumb(out.getvalue()).convert("RGB").getpixel((size[0] // 2, size[1] // 2))
        assert isinstance(got, tuple) and isinstance(want, tuple)
        if mode not in ("1", "P"):  # dithered: a single source pixel is not the average colour
            assert all(abs(a - b) < 8 for a, b in zip(got, want, strict=True)), (got, want)


def test_thumbnails_are_turned_upright_by_the_exif_orientation() -> None:
    image = Image.new("RGB", (4000, 3000), (200, 120, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    summary = make_thumbnails(out.getvalue(), [256, 1024])
    assert (summary.width, summary.height) == (4000, 3000)
    assert [(t.width, t.height) for t in summary.thumbnails] == [(192, 256), (768, 1024)]
