"""WebP thumbnails with Pillow, refusing what is not a plain, reasonably sized image.

Decompression bombs (a few KB of PNG that decode to gigapixels) are refused from the header,
before any pixel is decoded: the declared size must be under `max_pixels`. Pillow's own guard is
set to the same limit (our check never allows more than it), and its warning is turned into an
error too, so nothing bigger is decoded even through a path we did not foresee.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from jobrunner import PermanentError

# Only these decoders may run on uploaded bytes (Pillow knows many more, rarely exercised ones).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # JPEG covers MPO (multi-picture JPEG)
DEFAULT_MAX_PIXELS = 40_000_000

Image.init()  # register every decoder now: `formats=` only accepts registered ones
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)


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
            image.load()
            upright = ImageOps.exif_transpose(image)
            source = upright.convert("RGBA" if "A" in upright.getbands() or "transparency" in image.info else "RGB")
            thumbnails: list[Thumbnail] = []
            for size in sizes:
                copy = source.copy()
                copy.thumbnail((size, size), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                copy.save(out, format="WEBP", quality=80, method=4)
                thumbnails.append(Thumbnail(size, copy.width, copy.height, out.getvalue()))
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
