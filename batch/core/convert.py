"""An image Rekognition refuses as stored -> an upright JPEG it accepts as request bytes. Pure.

Use it for what `batch.core.image_checks.plan_image` routes to `CONVERTED_JPEG`: WebP, GIF, TIFF and BMP
files, and in bytes mode JPEG/PNG files over the 5 MB a request carries; never for JPEG/PNG files
Rekognition takes as they are (the job does not decode those). Files are untrusted, so decoding follows
Pillow's own fuzzing harness (reliability research §4.4): one plugin, sizes checked from the header
before decoding, a full `load()` of the first frame only. The copy is upright (Exif applied, no tag) with
transparency on white, so Rekognition answers in the original's upright frame. Pillow's expected
failures (`DECODE_ERRORS`) become `UnusableImage` with the code Rekognition gives a bad image; anything
else is a bug and propagates.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image

from batch.core.image_checks import (
    DECOMPRESSION_BOMB,
    INVALID_FORMAT,
    MAX_REQUEST_BYTES,
    MIN_SIDE_PX,
    TOO_LARGE,
    Refusal,
    bomb_refusal,
    size_refusal,
)
from batch.core.image_header import EXIF_ORIENTATION_TAG, ImageHeader, stored_size

#: What Pillow raises for a bad file (its OSS-Fuzz harness's list, the bomb pair caught separately), and
#: its warnings about corrupt data where warnings are errors.
DECODE_ERRORS = (OSError, SyntaxError, MemoryError, ValueError, NotImplementedError, OverflowError, Warning)
#: JPEG qualities tried at full size; a downscaled image is encoded at the last.
JPEG_QUALITIES: tuple[int, ...] = (90, 80)
#: Each downscale shrinks a side by at least this factor.
MAX_SHRINK = 0.9

#: The Pillow transpose that shows each Exif orientation upright (as `ImageOps.exif_transpose`).
UPRIGHT_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ConvertedImage:
    """The JPEG to send, its size in pixels (upright), and the facts of the file it was made from."""

    data: bytes
    width: int
    height: int
    #: The original's format, stored size and Exif orientation, read from the whole file.
    source: ImageHeader


class UnusableImage(Exception):
    """The image cannot be converted; `refusal` says why, with the error code for its row."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def forbid_decompression_bombs() -> None:
    """Make Pillow's DecompressionBombWarning an error in this process. Call once, at worker start.

    Changing warning filters is not thread-safe (`warnings.catch_warnings` least of all), so this is a
    process-wide setting made once, not a per-call context; `to_jpeg` checks pixel counts itself too.
    """
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def to_jpeg(
    data: bytes, fmt: str, *, max_pixels: int | None, max_bytes: int = MAX_REQUEST_BYTES
) -> ConvertedImage:
    """The first frame of `data` (a `fmt` file: JPEG, PNG, WEBP, GIF, TIFF or BMP), upright, as a JPEG
    of at most `max_bytes`. Raises UnusableImage for a file that is bad, too large, or a bomb."""
    try:
        # Only the plugin the magic bytes named parses the file.
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            width, height = stored_size(image)
            # Before any decoding; Pillow's pixel limit explicitly, so it holds however warnings are filtered.
            refusal = size_refusal(width, height) or bomb_refusal(width, height, max_pixels)
            if refusal is not None:
                raise UnusableImage(refusal)
            orientation = _orientation(image)
            # A full load of the first frame: verify() passes a truncated JPEG, load() does not. Other
            # frames are never sought: seek() on untrusted files is where Pillow's bomb checks were bypassed.
            image.load()
            # Pillow turns a TIFF upright as it loads it, and drops the tag: apply what is left.
            still_to_apply = _orientation(image)
            fmt_read = "JPEG" if image.format == "MPO" else image.format  # MPO: a JPEG to Rekognition
            source = ImageHeader(fmt_read, width, height, orientation)
            upright = _as_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnusableImage(Refusal("rejected", DECOMPRESSION_BOMB, str(exc))) from exc
    except DECODE_ERRORS as exc:
        reason = f"cannot decode the {fmt} file: {type(exc).__name__}: {exc}"[:500]
        raise UnusableImage(Refusal("rejected", INVALID_FORMAT, reason)) from exc
    if still_to_apply in UPRIGHT_TRANSPOSE:
        upright = upright.transpose(UPRIGHT_TRANSPOSE[still_to_apply])
    jpeg, (sent_width, sent_height) = _fit(upright, max_bytes)
    return ConvertedImage(jpeg, sent_width, sent_height, source)


def _orientation(image: Image.Image) -> int | None:
    """The image's Exif orientation (1..8), None without a valid one (as `ImageOps.exif_transpose`)."""
    value = image.getexif().get(EXIF_ORIENTATION_TAG)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _as_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image; transparent pixels show white, as on a white page."""
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _fit(image: Image.Image, max_bytes: int) -> tuple[bytes, tuple[int, int]]:
    """Encode at falling quality, then downscale (aspect kept) until the JPEG fits `max_bytes`."""
    candidate, qualities = image, JPEG_QUALITIES
    while True:
        for quality in qualities:
            data = _encode(candidate, quality)
            if len(data) <= max_bytes:
                return data, candidate.size
        # A JPEG's size grows about with its pixel count: aim just under the limit.
        scale = min(MAX_SHRINK, math.sqrt(max_bytes / len(data)))
        size = (round(candidate.width * scale), round(candidate.height * scale))
        if min(size) < MIN_SIDE_PX:
            reason = f"no JPEG of {image.width}x{image.height} px fits {max_bytes:,} bytes"
            raise UnusableImage(Refusal("rejected", TOO_LARGE, reason))
        candidate = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        qualities = qualities[-1:]


def _encode(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    # Full-resolution colour (4:4:4): 4:2:0 chroma would smear every colour edge by a pixel.
    image.save(buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
