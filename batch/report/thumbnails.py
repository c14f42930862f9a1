"""Gallery thumbnails: an image's bytes -> a small upright JPEG, in the frame its box columns are in. Pure.

Upright means turned by the `images.exif_orientation` the job recorded, the frame of every `box_*`
column, so the boxes drawn over a thumbnail sit where the tables say by construction. For a JPEG that
is its Exif tag, as a browser shows it; a PNG without an eXIf chunk is shown as stored (Rekognition
ignores the chunk); a converted file is turned as the job turned its copy. Decoding follows
`batch.core.convert`: one Pillow plugin chosen by the magic bytes, the pixel count checked from the header
first, and Pillow's expected failures reported, not raised.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from batch.core.convert import DECODE_ERRORS, UPRIGHT_TRANSPOSE
from batch.core.image_header import EXIF_ORIENTATION_TAG, sniff_format, stored_size

#: The longest side of a thumbnail, pixels: enough to see a face box, small enough for many per page.
THUMBNAIL_SIDE = 320
JPEG_QUALITY = 80


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int


class ThumbnailError(Exception):
    """The image cannot be shown; str() says why in a few words."""


def upright_thumbnail(
    data: bytes, orientation: int, *, side: int = THUMBNAIL_SIDE, max_pixels: int | None = None
) -> Thumbnail:
    """The first frame of `data`, turned by Exif `orientation` (1-8) and shrunk to fit `side` x `side`.

    Raises ThumbnailError for bytes that are not an image Pillow reads, or with more than `max_pixels`
    pixels (default: Pillow's decompression-bomb limit).
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ThumbnailError("not an image format the job reads")
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            width, height = stored_size(image)
            if limit is not None and width * height > limit:
                raise Image.DecompressionBombError(f"{width}x{height} px")
            tag_before = _orientation_tag(image)
            image.draft("RGB", (side, side))  # a JPEG decodes at 1/2..1/8 scale: far less work
            image.load()
            # Pillow turns a TIFF upright as it loads it, and drops its tag: then nothing is left to do.
            turned_by_pillow = tag_before is not None and _orientation_tag(image) is None
            picture = image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ThumbnailError("more pixels than Pillow decodes safely") from exc
    except DECODE_ERRORS as exc:
        raise ThumbnailError(f"cannot decode the {fmt} file: {type(exc).__name__}: {exc}"[:300]) from exc
    if not turned_by_pillow and orientation in UPRIGHT_TRANSPOSE:
        picture = picture.transpose(UPRIGHT_TRANSPOSE[orientation])
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return Thumbnail(buffer.getvalue(), picture.width, picture.height)


def _orientation_tag(image: Image.Image) -> int | None:
    value = image.getexif().get(EXIF_ORIENTATION_TAG)
    return value if isinstance(value, int) else None
