"""The same image work three ways, for `bench.blocking`: `python -m jobrunner run --handlers
bench.image_handlers`. Each job decodes a 12-megapixel PNG and makes the app's two WebP
thumbnails with the app's own code (jobrunner_handlers.thumbnails.make_thumbnails), as
process_upload does for an upload:

- image_on_loop: an async handler calling it directly, on the event loop (what a handler
  written without the blocking pools does);
- image_in_thread: @blocking_handler(runs_in="thread"), the daemon's bounded thread pool;
- image_in_process: @blocking_handler(runs_in="process"), the daemon's process pool.
"""

from __future__ import annotations

import functools
import io
from typing import Any

from PIL import Image, ImageDraw

from jobrunner import BlockingContext, JobContext, blocking_handler, handler
from jobrunner_handlers.thumbnails import make_thumbnails

SIZE = (4000, 3000)
THUMBNAILS = (256, 1024)


@functools.cache
def test_image() -> bytes:
    """A PNG of SIZE with enough structure that decoding it is real work (made once per process)."""
    image = Image.new("RGB", SIZE, (200, 120, 90))
    draw = ImageDraw.Draw(image)
    for step in range(0, SIZE[0], 40):
        draw.line((step, 0, SIZE[0] - step, SIZE[1]), fill=(step % 256, 40, 200 - step % 200), width=7)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def thumbnails() -> dict[str, Any]:
    summary = make_thumbnails(test_image(), THUMBNAILS, max_pixels=24_000_000)
    return {"width": summary.width, "height": summary.height, "thumbnails": len(summary.thumbnails)}


@handler("image_on_loop")
async def image_on_loop(_ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    return thumbnails()


@blocking_handler("image_in_thread", runs_in="thread")
def image_in_thread(_ctx: BlockingContext[dict[str, Any]]) -> dict[str, Any]:
    return thumbnails()


@blocking_handler("image_in_process", runs_in="process")
def image_in_process(_ctx: BlockingContext[dict[str, Any]]) -> dict[str, Any]:
    return thumbnails()
