"""process_upload's memory under the shipped limits: a real daemon process (`jobrunner run`, the
default concurrency, the app plugin's handlers) thumbnails several large images at once and its
peak resident set size (VmHWM, what the kernel's OOM killer and a container limit see) stays
under budget. The images are tiny files that decode to tens of megapixels: the sizes a user can
upload under the 5 MB limit."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
from pathlib import Path

import asyncpg
import pytest
from PIL import Image, ImageDraw

from handlers.tests.fake_storage import FakeStorage
from handlers.tests.test_schema import ALICE
from jobrunner_handlers.thumbnails import DEFAULT_MAX_PIXELS
from tests.support import jobrunner_process, wait_for

MIB = 1024 * 1024
# the Kubernetes limit is 512Mi (deploy/kubernetes/deployment.yaml); the budget leaves room for
# the daemon's other jobs and Python's fragmentation over a long run
PEAK_RSS_BUDGET = 320 * MIB


def large_image(size: tuple[int, int], mode: str, image_format: str) -> bytes:
    """A few hundred KB that decode to size[0] x size[1] pixels."""
    image = Image.new(mode, size, (200, 120, 90, 255)[: len(mode)])
    draw = ImageDraw.Draw(image)
    for step in range(0, min(size), 400):
        draw.rectangle((step, step, step + 200, step + 100), fill=(20, 40, 60, 128)[: len(mode)])
    out = io.BytesIO()
    image.save(out, format=image_format, **({"quality": 85} if image_format == "JPEG" else {}))
    return out.getvalue()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
async def test_large_uploads_at_once_stay_within_the_memory_limit(
    db_url: str, conn: asyncpg.Connection, storage: FakeStorage
) -> None:
    # under the pixel cap: RGBA PNGs (4 bytes a pixel, no draft decoding) and large JPEGs
    side = int(DEFAULT_MAX_PIXELS**0.5) - 10
    images = {
        f"{ALICE}/a.png": (large_image((side, side), "RGBA", "PNG"), "image/png"),
        f"{ALICE}/b.png": (large_image((side, side), "RGBA", "PNG"), "image/png"),
        f"{ALICE}/c.png": (large_image((side, side), "RGB", "PNG"), "image/png"),
        f"{ALICE}/d.jpg": (large_image((side, side), "RGB", "JPEG"), "image/jpeg"),
    }
    for path, (data, content_type) in images.items():
        assert len(data) < 5 * MIB
        storage.put("user-uploads", path, data, content_type)
    jobs = [
        await conn.fetchval(
            "SELECT enqueue_job('process_upload', $1::jsonb)", json.dumps({"user_id": str(ALICE), "path": path})
        )
        for path in images
    ]
    daemon = jobrunner_process(
        db_url,
        "run",
        env={
            "SUPABASE_URL": storage.url,
            "SUPABASE_SERVICE_ROLE_KEY": storage.service_key,
            "JOBRUNNER_APP_ALLOW_PRIVATE_NETWORK": "true",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        finished = await wait_for(
            conn,
            "SELECT count(*) FROM background_jobs WHERE id = ANY($1::bigint[]) AND status IN ('completed', 'failed')",
            jobs,
            expect=len(jobs),
            timeout=120,
        )
        assert finished == len(jobs)
        peak = peak_rss(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(daemon.communicate, timeout=60)
    statuses = await conn.fetch("SELECT status, last_error FROM background_jobs WHERE id = ANY($1::bigint[])", jobs)
    assert [(r["status"], r["last_error"]) for r in statuses] == [("completed", None)] * len(jobs), stderr[-2000:]
    assert len(storage.paths("user-uploads")) == 3 * len(images)  # each original and its two thumbnails
    assert peak < PEAK_RSS_BUDGET, f"peak RSS {peak / MIB:.0f} MiB is over the {PEAK_RSS_BUDGET / MIB:.0f} MiB budget"
