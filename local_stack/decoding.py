"""Bytes -> upright RGB pixels, validated the way Rekognition validates an image.

Rules (Rekognition Developer Guide, "Guidelines and quotas" and "images-orientation"):
- JPEG and PNG only, by magic bytes AND a full decode (truncated is invalid) -> InvalidImageFormatException;
- under 80 px a side -> InvalidParameterException (64 for DetectProtectiveEquipment: the endpoint
  decodes from 64 px, `too_small` holds the other operations to 80); over 10,000 px a side, or a
  decompression bomb -> ImageTooLargeException, from the header before decoding (AWS documents the
  message, not the code);
- a JPEG with an Exif orientation is turned upright; a PNG (Rekognition ignores eXIf) or an Exif-less
  JPEG is analysed as stored.
Size limits (5 MiB bytes, 15 MB S3 object) belong to where the bytes come from, see `images.py`.
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
#: The shortest side any operation reads: "The minimum image dimension for DetectProtectiveEquipment is 64
#: pixels" (Developer Guide, "Guidelines and quotas").
LOWEST_MIN_SIDE_PX = 64
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


def decode_upright(data: bytes, min_side_px: int = MIN_SIDE_PX) -> np.ndarray:
    """Decode fully and return the upright frame as an (H, W, 3) uint8 array; InvalidParameterException
    under `min_side_px` a side."""
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
    refusal = too_small(width, height, min_side_px)
    if refusal is not None:
        raise refusal
    return rgb


def too_small(width: int, height: int, min_side_px: int = MIN_SIDE_PX) -> ServiceError | None:
    """The error for an image with a side under `min_side_px`, or None."""
    if width >= min_side_px and height >= min_side_px:
        return None
    return ServiceError(
        "InvalidParameterException",
        f"Request has invalid parameters: image is {width}x{height}, minimum is {min_side_px} px a side.",
    )
