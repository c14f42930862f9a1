"""What an image's first bytes say: format, stored size, Exif orientation. Pure: bytes in, facts out.

The job reads only the head of each object (a ranged GET) and never decodes pixels here: enough to
decide what to do with the image before any call (`batch.core.image_checks`) and to put every box in the
upright frame, without image bytes in the job in S3-reference mode. The format is told by the magic
bytes, never by the key, and each format the job handles is parsed by its own Pillow plugin class rather
than `Image.open`: the same header parse, without the decompression-bomb check that would hide a large
image's size behind an exception (the size limits are applied by `batch.core.image_checks` and
`batch.core.convert`). WebP headers are read here directly: Pillow's WebP plugin needs the whole file.
When the head is too short for the header, `probe` says so and the caller reads more. An Exif block
that does not parse does not make the header unreadable: Rekognition decides what it can read, so the
image is sent with orientation 1 (Pillow decodes such a file and `ImageOps.exif_transpose` leaves it as
stored) and `problem` notes it.
"""

from __future__ import annotations

import enum
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from batch.core.geometry import BoxPlacement

EXIF_ORIENTATION_TAG = 0x0112
#: How `ImageHeader.problem` starts for an image whose Exif block does not parse (orientation 1).
UNREADABLE_EXIF = "unreadable Exif block, orientation 1 assumed"

#: Rekognition reads these as they are stored ("MPO", a multi-picture JPEG, is reported as "JPEG").
REKOGNITION_FORMATS = frozenset({"JPEG", "PNG"})
#: Pillow reads these and Rekognition refuses them: the job can convert them to JPEG.
CONVERTIBLE_FORMATS = frozenset({"WEBP", "GIF", "TIFF", "BMP"})

_MAGIC_NUMBERS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)

#: The Pillow plugin class (or factory) that parses each format's header.
_HEADER_PARSERS: dict[str, Callable[[IO[bytes]], ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.jpeg_factory,  # a JPEG with an MP index comes back as MPO
    "PNG": PngImagePlugin.PngImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "TIFF": TiffImagePlugin.TiffImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
}

#: What a malformed header makes Pillow's plugins raise (besides the decompression-bomb pair). Warnings
#: too: Pillow warns of corrupt data (e.g. a TIFF's tags cut off by the end of the head), which is raised
#: where warnings are errors.
_PARSE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, Warning,
)  # fmt: skip


class HeaderFault(enum.Enum):
    """Why the header gave no size."""

    EMPTY = "empty"  # a zero-byte object
    UNRECOGNISED = "unrecognised"  # not one of the formats above
    BROKEN = "broken"  # the format's magic bytes, then a header that does not parse
    BOMB = "bomb"  # the header claims more pixels than Pillow's limit (seen while parsing, e.g. a GIF frame)
    TOO_LONG = "too_long"  # the header did not end within the bytes read (the caller's limit)


@dataclass(frozen=True)
class ImageHeader:
    """Facts from an image's header. `format` is Pillow's name ("JPEG", "PNG", "WEBP", ...) or None.

    When the header could not be read, `fault` says why and `problem` says it in words; `format` is
    still the format the magic bytes name, if any. A header read in part (an unreadable Exif block:
    no orientation) has no `fault`, and `problem` says what was not read.
    """

    format: str | None
    stored_width: int | None
    stored_height: int | None
    #: The Exif orientation tag's value, None when the tag is absent (or out of the 1..8 range).
    exif_orientation: int | None
    #: Why the header could not be read, when it could not.
    problem: str | None = None
    fault: HeaderFault | None = None

    @property
    def orientation(self) -> int:
        """The orientation to display the image upright: 1 when there is no tag."""
        return self.exif_orientation or 1

    @classmethod
    def unreadable(cls, fmt: str | None, fault: HeaderFault, problem: str) -> ImageHeader:
        return cls(fmt, None, None, None, problem, fault)

    def box_placement(self, orientation_correction: str | None) -> BoxPlacement:
        """Where the boxes of a Rekognition answer about this image go (`BoxPlacement.for_response`)."""
        return BoxPlacement.for_response(
            image_format=self.format,
            # Rekognition answered, so the image was readable: a header we could not parse is the rare
            # case of a header past MAX_HEAD_BYTES. Size 0 means unknown: the normalised box columns are
            # kept and the pixel columns are null, rather than losing the rows.
            stored_width=self.stored_width or 0,
            stored_height=self.stored_height or 0,
            exif_orientation=self.exif_orientation,
            orientation_correction=orientation_correction,
        )


class HeaderIncomplete(Exception):
    """The bytes end before the header does: read more of the object."""


def sniff_format(head: bytes) -> str | None:
    """The format the magic bytes name (JPEG, PNG, WEBP, GIF, TIFF, BMP), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC_NUMBERS if head.startswith(magic)), None)


def probe(head: bytes, *, complete: bool) -> ImageHeader:
    """Read the header from the first bytes of an image.

    `complete` says whether `head` is the whole object. When it is not and the header runs past its
    end, raises HeaderIncomplete so the caller can fetch a longer range.
    """
    if not head:
        return ImageHeader.unreadable(None, HeaderFault.EMPTY, "zero-byte object")
    fmt = sniff_format(head)
    if fmt is None:
        return ImageHeader.unreadable(None, HeaderFault.UNRECOGNISED, "unrecognised image format")
    if fmt == "WEBP":
        return _webp_header(head, complete=complete)
    try:
        with _HEADER_PARSERS[fmt](io.BytesIO(head)) as image:
            width, height = stored_size(image)
            orientation, exif_problem = _orientation(image)
            parsed_format = image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageHeader.unreadable(fmt, HeaderFault.BOMB, f"decompression bomb: {exc}")
    except _PARSE_ERRORS as exc:
        if not complete:
            raise HeaderIncomplete(str(exc)) from exc
        return ImageHeader.unreadable(fmt, HeaderFault.BROKEN, f"broken image header: {exc}")
    if parsed_format == "MPO":  # a multi-picture JPEG is a JPEG to Rekognition
        parsed_format = "JPEG"
    valid = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    return ImageHeader(parsed_format, width, height, valid, exif_problem)


def stored_size(image: Image.Image) -> tuple[int, int]:
    """The size of the stored pixel array of an opened image.

    Not `image.size` for a TIFF: Pillow gives a TIFF its upright size (swapped for orientations 5-8)
    and turns it upright as it loads it.
    """
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return image.tag_v2[TiffImagePlugin.IMAGEWIDTH], image.tag_v2[TiffImagePlugin.IMAGELENGTH]
    return image.size


def _orientation(image: ImageFile.ImageFile) -> tuple[object, str | None]:
    """The orientation tag's value (None without one), and why it could not be read if it could not.

    The Exif block was read whole with the header (Pillow reads a JPEG's APP1 segment or a PNG's eXIf
    chunk in full as it opens the file), so a block that does not parse is garbage, not cut short."""
    # Not Image.getexif(): for a PNG without an eXIf chunk in its header, Pillow decodes the whole
    # image looking for one. An eXIf chunk after the pixel data is not read (viewers ignore it too).
    # A TIFF's orientation is a tag of its first IFD, not an Exif block.
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return image.tag_v2.get(EXIF_ORIENTATION_TAG), None
    raw_exif = image.info.get("exif")
    if not raw_exif:
        return None, None
    exif = Image.Exif()
    try:
        exif.load(raw_exif)
        return exif.get(EXIF_ORIENTATION_TAG), None
    except _PARSE_ERRORS as exc:
        return None, f"{UNREADABLE_EXIF}: {exc}"[:300]


def _webp_header(head: bytes, *, complete: bool) -> ImageHeader:
    """Canvas size from a WebP's first chunk (VP8, VP8L or VP8X; "WebP Container Specification").

    The orientation is not read: a WebP's EXIF chunk follows the image data, past the head. The
    conversion reads it from the whole file.
    """
    if len(head) < 30:
        if not complete:
            raise HeaderIncomplete("WebP header cut short")
        return ImageHeader.unreadable("WEBP", HeaderFault.BROKEN, "broken image header: WebP cut short")
    chunk, payload = head[12:16], head[20:30]
    size: tuple[int, int] | None = None
    if chunk == b"VP8 " and payload[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", payload[6:10])
        size = (width & 0x3FFF, height & 0x3FFF)
    elif chunk == b"VP8L" and payload[0] == 0x2F:
        (bits,) = struct.unpack("<I", payload[1:5])
        size = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    elif chunk == b"VP8X":
        size = (int.from_bytes(payload[4:7], "little") + 1, int.from_bytes(payload[7:10], "little") + 1)
    if size is None:
        problem = f"broken image header: WebP chunk {chunk!r}"
        return ImageHeader.unreadable("WEBP", HeaderFault.BROKEN, problem)
    return ImageHeader("WEBP", size[0], size[1], None)
