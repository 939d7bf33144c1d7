"""WebP thumbnails with Pillow, refusing what is not a plain, reasonably sized image, within a
memory budget.

Decompression bombs (a few KB of PNG that decode to gigapixels) are refused from the header,
before any pixel is decoded: the declared size must be under `max_pixels`. Pillow's own guard is
set too (our check never allows more than it), and its warning is turned into an error, so
nothing bigger is decoded even through a path we did not foresee.

Memory: the full-size image is decoded once and never copied at full size. A JPEG is decoded
at the smallest DCT scale that still covers twice the largest thumbnail (`draft`), which for a
phone photo is a quarter or an eighth of its pixels. Other formats are decoded whole, then
box-reduced (`reduce`) to at most about twice the largest thumbnail and the full image released
before anything else is done; rotation, colour conversion and the resampling to each size work on
that small image. The peak is about one decoded image plus a fraction of it, and at most
`image_concurrency` images are decoded at once per process (make_thumbnails_in_budget).
"""

from __future__ import annotations

import asyncio
import io
import threading
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from jobrunner import BlockingCallCancelled, PermanentError, raise_if_cancelled

# Only these decoders may run on uploaded bytes (Pillow knows many more, rarely exercised ones).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # JPEG covers MPO (multi-picture JPEG)
# 24 Mpx: a 6000x4000 camera photo. A 4-byte-a-pixel image of that size is ~96 MB decoded.
DEFAULT_MAX_PIXELS = 24_000_000
# Pillow's own guard, a hard ceiling for the setting (it errors at twice this, warns above it)
PILLOW_MAX_PIXELS = 40_000_000
# reduce to at most this many times the largest thumbnail before resampling (as Pillow's
# `reducing_gap`: below 2 the box filter's blur would show, above it memory and time grow)
REDUCING_GAP = 2

Image.init()  # register every decoder now: `formats=` only accepts registered ones
Image.MAX_IMAGE_PIXELS = PILLOW_MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
# modes `reduce` and the LANCZOS resampling take as they are; others are converted first
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA")


class NotAnAcceptedImage(PermanentError):
    pass


@dataclass(frozen=True)
class Thumbnail:
    size: int
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class ImageSummary:
    format: str
    width: int
    height: int
    thumbnails: list[Thumbnail]


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of width x height scaled into a box x box square, never enlarged."""
    if width <= box and height <= box:
        return width, height
    if width >= height:
        return box, max(1, round(height * box / width))
    return max(1, round(width * box / height)), box


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Box-reduce by `factor`. Pillow's own reduce premultiplies LA/RGBA through a full-size copy
    (twice the decoded size at the peak); reduced a band at a time, the extra is one band. Without
    premultiplication, colour under fully transparent pixels can tint the edges of opaque ones by
    a fraction of a thumbnail pixel, which is not worth a second full-size image."""
    if image.mode not in ("LA", "RGBA"):
        return image.reduce(factor)
    bands = []
    for band in range(len(image.getbands())):
        channel = image.getchannel(band)
        bands.append(channel.reduce(factor))
        channel.close()
    return Image.merge(image.mode, bands)


def _small_upright(image: Image.Image, largest: int) -> Image.Image:
    """The decoded image reduced to about REDUCING_GAP x the largest thumbnail, upright, in RGB
    or RGBA. A full-size image is closed (its pixels freed) as soon as a smaller one replaces it."""
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    target_mode = "RGBA" if has_alpha else "RGB"
    if image.format in ("JPEG", "MPO"):
        # decode at the smallest DCT scale (1/2, 1/4, 1/8) still covering this size
        image.draft(None, fit(image.width, image.height, largest * REDUCING_GAP))
    image.load()
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    working = image
    if working.mode not in _REDUCIBLE_MODES or (has_alpha and working.mode in ("L", "RGB")):
        working = working.convert(target_mode)  # palette, 1-bit, 16-bit, CMYK: one full-size conversion
        image.close()
    target_width, target_height = fit(working.width, working.height, largest)
    factor = min(working.width // (target_width * REDUCING_GAP), working.height // (target_height * REDUCING_GAP))
    if factor > 1:
        reduced = _reduce(working, factor)
        working.close()
        image.close()
        working = reduced
    if orientation in _UPRIGHT:
        working = working.transpose(_UPRIGHT[orientation])
    return working.convert(target_mode) if working.mode != target_mode else working


def make_thumbnails(data: bytes, sizes: Sequence[int], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSummary:
    """WebP thumbnails fitting in size x size boxes (never upscaled). CPU-bound: run it in a thread."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that, and a warning filter is
            # process state anyone can change: never allow more than Pillow's limit ourselves
            max_pixels = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
            if width * height > max_pixels:
                raise NotAnAcceptedImage(
                    f"image is {width}x{height} = {width * height} pixels, over the {max_pixels}-pixel limit "
                    "(a decompression bomb, or simply too large)"
                )
            image_format = str(image.format)
            image.seek(0)  # the first frame of an animation
            # inside the `with`: the source may be the opened image itself (a small one)
            source = _small_upright(image, max(sizes))
            thumbnails: list[Thumbnail] = []
            for size in sizes:
                thumb = source.resize(fit(source.width, source.height, size), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                thumb.save(out, format="WEBP", quality=80, method=4)
                thumbnails.append(Thumbnail(size, thumb.width, thumb.height, out.getvalue()))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NotAnAcceptedImage(f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise NotAnAcceptedImage(f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})") from exc
    except NotAnAcceptedImage:
        raise
    except Exception as exc:
        # decoding the same bytes again fails the same way: whatever a decoder raises on
        # untrusted input (OSError, SyntaxError, ValueError for truncated files, ...) is permanent
        raise NotAnAcceptedImage(f"the image could not be decoded: {type(exc).__name__}: {exc}") from exc
    return ImageSummary(image_format, width, height, thumbnails)


class DecodeBudget:
    """At most `size` decodes at once in this process, waited for on the event loop (a job
    waiting for its turn holds no thread) and given back by the thread that decoded, when its
    decode ends: a job that stops waiting (timeout, cancel request, shutdown) cannot stop its
    thread, so the budget is held by the thread, not by the job. One thread decoding after
    another also keeps the decodes in few threads, and so in few of glibc's per-thread malloc
    arenas (each keeps the high-water mark of the images decoded in it)."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._free = size
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                still_waiting = (loop, waiter) in self._waiters
                if still_waiting:
                    self._waiters.remove((loop, waiter))
            if not still_waiting and waiter.done() and not waiter.cancelled():
                self.release()  # granted as it was cancelled: pass it on
            raise

    def release(self) -> None:
        """From any thread."""
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            loop, waiter = self._waiters.popleft()
        try:
            loop.call_soon_threadsafe(self._grant, waiter)
        except RuntimeError:  # its loop has closed: nobody waits there any more
            self.release()

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            self.release()
        else:
            waiter.set_result(None)


class _Turn:
    """One decode's turn in the budget: given back by its thread when the decode ends, or by
    its job when the call was dropped before it started (a queued call never runs)."""

    def __init__(self, budget: DecodeBudget) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._state = "queued"  # queued -> decoding | dropped

    def start(self) -> bool:
        with self._lock:
            if self._state == "dropped":
                return False
            self._state = "decoding"
            return True

    def drop(self) -> None:
        """Its job stopped waiting: give the turn back unless its thread has it."""
        with self._lock:
            if self._state != "queued":
                return
            self._state = "dropped"
        self.budget.release()


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def _budget(concurrency: int) -> DecodeBudget:
    with _budgets_lock:
        budget = _budgets.get(concurrency)
        if budget is None:
            budget = _budgets[concurrency] = DecodeBudget(concurrency)
        return budget


def _make_thumbnails_in_turn(turn: _Turn, data: bytes, sizes: Sequence[int], max_pixels: int) -> ImageSummary:
    if not turn.start():
        raise BlockingCallCancelled("its job stopped waiting before the decode started")
    try:
        raise_if_cancelled()
        return make_thumbnails(data, sizes, max_pixels)
    finally:
        turn.budget.release()


RunInThread = Callable[..., Awaitable[ImageSummary]]


async def make_thumbnails_in_budget(
    run_in_thread: RunInThread, data: bytes, sizes: Sequence[int], max_pixels: int, concurrency: int
) -> ImageSummary:
    """make_thumbnails in one of the daemon's blocking threads (`ctx.run_in_thread`), at most
    `concurrency` decoding at once in this process: the other jobs wait here (holding only their
    downloaded bytes, and no thread), not in memory-hungry decoders."""
    budget = _budget(concurrency)
    await budget.acquire()
    turn = _Turn(budget)
    try:
        return await run_in_thread(_make_thumbnails_in_turn, turn, data, sizes, max_pixels)
    except BaseException:
        turn.drop()
        raise
