"""Before any call: how to send one listed image to Rekognition, or why not to. Pure: facts in, a plan out.

Rekognition's rules (Developer Guide, "Guidelines and quotas",
https://docs.aws.amazon.com/rekognition/latest/dg/limits.html): JPEG and PNG only; an S3 object up to
15 MB, request bytes up to 5 MB (botocore model, `ImageBlob` max 5242880); 80 to 10,000 px a side. An
image that breaks one is refused here, from its listed size and its header, with the error code
Rekognition would give, so no call is spent on it. WebP, GIF, TIFF and BMP files (and, in bytes mode,
JPEG and PNG files over 5 MB) are converted to JPEG (`batch.core.convert`). The job never decodes a JPEG
or PNG it sends as stored: damage past its header is Rekognition's to find. The checks, first match
wins, are tabled in docs/tables.md ("Which images are sent, and how").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from batch.core.image_header import CONVERTIBLE_FORMATS, REKOGNITION_FORMATS, HeaderFault, ImageHeader

MIN_SIDE_PX = 80
MAX_SIDE_PX = 10_000
#: "Maximum image size stored as an Amazon S3 object is limited to 15 MB."
MAX_S3_OBJECT_BYTES = 15 * 1024 * 1024
#: The largest `Image.Bytes` a request may carry.
MAX_REQUEST_BYTES = 5 * 1024 * 1024

#: The job's own error codes, for images it does not send (docs/tables.md, `errors`).
EMPTY_OBJECT = "EmptyObject"
NOT_CONVERTED = "NotConverted"
TOO_LARGE_TO_CONVERT = "TooLargeToConvert"
DECOMPRESSION_BOMB = "DecompressionBomb"
#: The conversion failed in a way no bad file should make it fail: a bug; the image is `failed`.
CONVERSION_ERROR = "ConversionError"
#: Rekognition's codes, for images it would refuse.
INVALID_FORMAT = "InvalidImageFormatException"
TOO_LARGE = "ImageTooLargeException"
INVALID_PARAMETER = "InvalidParameterException"


@dataclass(frozen=True)
class AnalysisLimits:
    """One operation's own limits, tighter than Rekognition's general ones (`plan_image`), checked before
    each of its calls: sides in pixels, `Image.Bytes` and S3-object sizes in bytes. A None is the
    general limit (already checked)."""

    min_side_px: int | None = None
    max_side_px: int | None = None
    max_request_bytes: int | None = None
    max_s3_object_bytes: int | None = None


class Route(enum.Enum):
    """How an image goes to Rekognition; the value is `images.sent_as`."""

    S3_OBJECT = "s3_object"
    BYTES = "bytes"
    CONVERTED_JPEG = "converted_jpeg"


@dataclass(frozen=True)
class Refusal:
    """An image the job does not send: its `images.status`, its error code and why, in words."""

    #: "rejected" (it cannot be analysed), "skipped" (by choice: empty, or conversion off), or "failed"
    #: (the conversion met an unexpected error).
    status: str
    code: str
    reason: str


@dataclass(frozen=True)
class ImageRules:
    """The settings the plan depends on (from `[rekognition]`, plus Pillow's pixel limit)."""

    image_source: str = "s3"
    convert_to_jpeg: bool = True
    max_convert_bytes: int = 50_000_000
    #: `PIL.Image.MAX_IMAGE_PIXELS`: images with more pixels are never decoded. None: no limit.
    max_pixels: int | None = 89_478_485
    #: The shortest side sent: Rekognition's 80 px, or less when one of the image's analyses reads
    #: smaller images (`ppe`: 64); each analysis then refuses what is under its own minimum.
    min_side_px: int = MIN_SIDE_PX


def plan_image(size: int, header: ImageHeader, rules: ImageRules) -> Route | Refusal:
    """How to send an image of `size` bytes (as listed) with this header, or why it is not sent.

    First match wins: the header's faults, Rekognition's limits on sides, then the route of a JPEG or
    PNG (`_plan_as_stored`) or of a file to convert (`_plan_conversion`)."""
    refusal = _header_refusal(size, header)
    if refusal is not None:
        return refusal
    if header.stored_width is not None and header.stored_height is not None:
        refusal = size_refusal(header.stored_width, header.stored_height, rules.min_side_px)
        if refusal is not None:
            return refusal
    if header.format in REKOGNITION_FORMATS:
        return _plan_as_stored(size, header, rules)
    return _plan_conversion(size, header, rules)


def size_refusal(width: int, height: int, min_side_px: int = MIN_SIDE_PX) -> Refusal | None:
    """Rekognition's refusal of an image this many pixels wide and high, if it would refuse it
    (`min_side_px`: the shortest side any of the image's analyses reads)."""
    if min(width, height) < min_side_px:
        return Refusal("rejected", INVALID_PARAMETER, f"{width}x{height} px: under {min_side_px} px a side")
    if max(width, height) > MAX_SIDE_PX:
        return Refusal("rejected", TOO_LARGE, f"{width}x{height} px: over {MAX_SIDE_PX:,} px a side")
    return None


def limits_refusal(
    limits: AnalysisLimits,
    operation: str,
    width: int | None,
    height: int | None,
    size: int,
    *,
    as_bytes: bool,
) -> Refusal | None:
    """`operation`'s refusal of an image of `width` x `height` px (as sent; None: unknown, not checked)
    sent as `size` bytes (`as_bytes`) or as an S3 object of `size` bytes, if its own limits refuse it."""
    sides = f"{width}x{height} px"
    if width is not None and height is not None:
        if limits.min_side_px is not None and min(width, height) < limits.min_side_px:
            reason = f"{sides}: under the {limits.min_side_px} px a side {operation} reads"
            return Refusal("rejected", INVALID_PARAMETER, reason)
        if limits.max_side_px is not None and max(width, height) > limits.max_side_px:
            reason = f"{sides}: over the {limits.max_side_px:,} px a side {operation} reads"
            return Refusal("rejected", TOO_LARGE, reason)
    most, what = (
        (limits.max_request_bytes, "as bytes")
        if as_bytes
        else (limits.max_s3_object_bytes, "as an S3 object")
    )
    if most is not None and size > most:
        return Refusal("rejected", TOO_LARGE, f"{size:,} bytes: over the {most:,} {operation} reads {what}")
    return None


def bomb_refusal(width: int, height: int, max_pixels: int | None) -> Refusal | None:
    """The refusal to decode an image with more pixels than `max_pixels` (Pillow's limit)."""
    if max_pixels is None or width * height <= max_pixels:
        return None
    return Refusal(
        "rejected",
        DECOMPRESSION_BOMB,
        f"{width}x{height} px is {width * height:,} pixels, over the {max_pixels:,} the job decodes",
    )


def _header_refusal(size: int, header: ImageHeader) -> Refusal | None:
    if size == 0 or header.fault is HeaderFault.EMPTY:
        return Refusal("skipped", EMPTY_OBJECT, "zero-byte object")
    if header.fault is HeaderFault.BOMB:
        return Refusal("rejected", DECOMPRESSION_BOMB, header.problem or "decompression bomb")
    if header.fault in (HeaderFault.UNRECOGNISED, HeaderFault.BROKEN) or header.format is None:
        return Refusal("rejected", INVALID_FORMAT, header.problem or "unrecognised image format")
    if header.format not in REKOGNITION_FORMATS | CONVERTIBLE_FORMATS:
        return Refusal("rejected", INVALID_FORMAT, f"{header.format}: not a format the job reads")
    # TOO_LONG: the format is known but not the size; the size is checked where it becomes known
    # (by Rekognition for a JPEG or PNG, by the conversion otherwise).
    return None


def _plan_as_stored(size: int, header: ImageHeader, rules: ImageRules) -> Route | Refusal:
    # Refused in both image-source modes, as Rekognition refuses it, so both modes analyse the same images
    # (but for one over 5 MB with more pixels than the job decodes, which bytes mode cannot send).
    if size > MAX_S3_OBJECT_BYTES:
        return Refusal(
            "rejected", TOO_LARGE, f"{size:,} bytes: over the {MAX_S3_OBJECT_BYTES:,} Rekognition reads"
        )
    if rules.image_source == "s3":
        return Route.S3_OBJECT
    if size <= MAX_REQUEST_BYTES:
        return Route.BYTES
    if not rules.convert_to_jpeg:
        return Refusal(
            "rejected",
            TOO_LARGE,
            f"{size:,} bytes: over the {MAX_REQUEST_BYTES:,} a request carries "
            "(rekognition.convert_to_jpeg = false)",
        )
    return _plan_conversion(size, header, rules)


def _plan_conversion(size: int, header: ImageHeader, rules: ImageRules) -> Route | Refusal:
    # Not bound by the 15 MB S3-object limit (Rekognition never reads the object), only by
    # `max_convert_bytes`, which bounds what the job reads whole.
    if not rules.convert_to_jpeg:
        return Refusal(
            "skipped",
            NOT_CONVERTED,
            f"{header.format}: Rekognition reads JPEG and PNG only (rekognition.convert_to_jpeg = false)",
        )
    if size > rules.max_convert_bytes:
        return Refusal(
            "rejected",
            TOO_LARGE_TO_CONVERT,
            f"{size:,} bytes: over rekognition.max_convert_bytes ({rules.max_convert_bytes:,})",
        )
    if header.stored_width is not None and header.stored_height is not None:
        refusal = bomb_refusal(header.stored_width, header.stored_height, rules.max_pixels)
        if refusal is not None:
            return refusal
    return Route.CONVERTED_JPEG
