"""Bytes -> upright RGB pixels, validated the way Rekognition validates an image.

Rules (Rekognition Developer Guide, "Guidelines and quotas" and "images-orientation"):
- only JPEG and PNG (magic bytes AND a full decode; truncated is invalid) -> InvalidImageFormatException;
- at least 80 px on each side -> InvalidParameterException;
- at most 10,000 px on each side -> ImageTooLargeException (checked from the header, before decoding; AWS's
  message reads "Input image dimensions 10800 x 5400 exceed maximum dimension size of 10000 pixels", the
  code is not documented);
- a JPEG with an Exif orientation is turned upright before analysis; PNG and Exif-less JPEG are analysed as
  stored (Pillow would also honour a PNG eXIf chunk, Rekognition does not, so we only transpose JPEGs).
Size limits (5 MiB bytes, 15 MB S3 object) belong to where the bytes come from, see `images.py`.
Decompression bombs give ImageTooLargeException: the pixel count is checked before decoding, and
`treat_bomb_warnings_as_errors()` (called once at server start) makes Pillow's warning an error too.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from local_stack.errors import ServiceError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_SIDE_PX = 80
MAX_SIDE_PX = 10_000


def treat_bomb_warnings_as_errors() -> None:
    """Process-wide, so call it once before serving (warning filters are not thread-safe to change later)."""
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def _invalid_format(reason: str) -> ServiceError:
    return ServiceError("InvalidImageFormatException", f"Request has invalid image format. ({reason})")


def sniff_format(data: bytes) -> str:
    """'JPEG' or 'PNG' from the magic bytes, else raise InvalidImageFormatException."""
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if data.startswith(PNG_MAGIC):
        return "PNG"
    raise _invalid_format("not a JPEG or PNG")


def decode_upright(data: bytes) -> np.ndarray:
    """Decode fully and return the upright frame as an (H, W, 3) uint8 array."""
    declared = sniff_format(data)
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as img:
            # Guard against decompression bombs before decoding (thread-safe, unlike warning filters).
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and img.width * img.height > limit:
                raise ServiceError("ImageTooLargeException", "Image size is too large.")
            if max(img.size) > MAX_SIDE_PX:
                raise ServiceError(
                    "ImageTooLargeException",
                    f"Input image dimensions {img.width} x {img.height} exceed maximum dimension size of "
                    f"{MAX_SIDE_PX} pixels.",
                )
            img.load()
            upright = ImageOps.exif_transpose(img) if declared == "JPEG" else img
            rgb = np.asarray(upright.convert("RGB"))
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ServiceError("ImageTooLargeException", "Image size is too large.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _invalid_format(type(exc).__name__) from exc
    height, width = rgb.shape[:2]
    if width < MIN_SIDE_PX or height < MIN_SIDE_PX:
        raise ServiceError(
            "InvalidParameterException",
            f"Request has invalid parameters: image is {width}x{height}, minimum is {MIN_SIDE_PX} px a side.",
        )
    return rgb
