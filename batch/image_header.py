"""What an image's first bytes say: format, stored size, Exif orientation. Pure: bytes in, facts out.

The job reads only the head of each object (a ranged GET) and never decodes pixels here: this is enough
to put every box in the upright frame, and it keeps image bytes out of the job in S3-reference mode.
Pillow's `Image.open` parses the header lazily; a JPEG's Exif sits in APP1 before the first scan, a
PNG's size in IHDR. When the head is too short for the header (a large ICC profile or XMP packet before
the frame header), `probe` says so and the caller reads more.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

EXIF_ORIENTATION_TAG = 0x0112
#: How JPEG and PNG files start: a head with one of these that Pillow cannot place yet is cut short.
MAGIC_NUMBERS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


@dataclass(frozen=True)
class ImageHeader:
    """Facts from an image's header. `format` is Pillow's name ("JPEG", "PNG", "WEBP", ...) or None."""

    format: str | None
    stored_width: int | None
    stored_height: int | None
    #: The Exif orientation tag's value, None when the tag is absent (or out of the 1..8 range).
    exif_orientation: int | None
    #: Why the header could not be read, when it could not.
    problem: str | None = None

    @property
    def orientation(self) -> int:
        """The orientation to display the image upright: 1 when there is no tag."""
        return self.exif_orientation or 1


class HeaderIncomplete(Exception):
    """The bytes end before the header does: read more of the object."""


def probe(head: bytes, *, complete: bool) -> ImageHeader:
    """Read the header from the first bytes of an image.

    `complete` says whether `head` is the whole object. When it is not and the header runs past its
    end, raises HeaderIncomplete so the caller can fetch a longer range.
    """
    if not head:
        return ImageHeader(None, None, None, None, "zero-byte object")
    try:
        with warnings.catch_warnings():
            # A header claiming a huge size is a decompression bomb: report it, don't go further.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head)) as image:
                orientation = _orientation(image.info.get("exif"))
                width, height = image.size
                fmt = image.format
    except UnidentifiedImageError as exc:
        if not complete and head.startswith(MAGIC_NUMBERS):
            raise HeaderIncomplete(str(exc)) from exc
        return ImageHeader(None, None, None, None, "unrecognised image format")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageHeader(None, None, None, None, f"decompression bomb: {exc}")
    except (OSError, SyntaxError, ValueError, EOFError, struct_error()) as exc:
        if not complete:
            raise HeaderIncomplete(str(exc)) from exc
        return ImageHeader(None, None, None, None, f"broken image header: {exc}")
    if fmt == "MPO":  # a multi-picture JPEG is a JPEG to Rekognition
        fmt = "JPEG"
    valid = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    return ImageHeader(fmt, width, height, valid)


def _orientation(raw_exif: bytes | None) -> object:
    # Not Image.getexif(): for a PNG without an eXIf chunk in its header, Pillow decodes the whole
    # image looking for one. An eXIf chunk after the pixel data is not read (viewers ignore it too).
    if not raw_exif:
        return None
    exif = Image.Exif()
    exif.load(raw_exif)
    return exif.get(EXIF_ORIENTATION_TAG)


def struct_error() -> type[Exception]:
    import struct

    return struct.error
