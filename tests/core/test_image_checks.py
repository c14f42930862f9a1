"""batch.core.image_checks: the plan for every listed image, from its size and header, before any call."""

from __future__ import annotations

import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.core.image_checks import (
    MAX_REQUEST_BYTES,
    MAX_S3_OBJECT_BYTES,
    MAX_SIDE_PX,
    MIN_SIDE_PX,
    ImageRules,
    Refusal,
    Route,
    plan_image,
)
from batch.core.image_header import HeaderFault, ImageHeader

MANY = settings(max_examples=examples(500), deadline=None)
MB = 1024 * 1024
INVALID, TOO_LARGE = "InvalidImageFormatException", "ImageTooLargeException"
PARAMETER = "InvalidParameterException"
S3, BYTES = ImageRules(image_source="s3"), ImageRules(image_source="bytes")
NO_CONVERSION = ImageRules(convert_to_jpeg=False)


def header(fmt: str | None = "JPEG", width: int = 640, height: int = 480) -> ImageHeader:
    return ImageHeader(fmt, width, height, None)


def unreadable(fmt: str | None, fault: HeaderFault) -> ImageHeader:
    return ImageHeader.unreadable(fmt, fault, f"{fault.value} header")


def refusal(plan: Route | Refusal) -> tuple[str, str]:
    assert isinstance(plan, Refusal), plan
    return plan.status, plan.code


@pytest.mark.parametrize(
    ("size", "head", "rules", "expected"),
    [
        # JPEG and PNG within Rekognition's limits go as configured.
        (200_000, header("JPEG"), S3, Route.S3_OBJECT),
        (200_000, header("PNG"), BYTES, Route.BYTES),
        (MAX_REQUEST_BYTES, header("JPEG"), BYTES, Route.BYTES),
        # Over the 5 MB a request carries: re-encoded in bytes mode, fine as an S3 object.
        (MAX_REQUEST_BYTES + 1, header("JPEG"), BYTES, Route.CONVERTED_JPEG),
        (MAX_REQUEST_BYTES + 1, header("JPEG"), S3, Route.S3_OBJECT),
        (MAX_S3_OBJECT_BYTES, header("PNG"), S3, Route.S3_OBJECT),
        # Other formats are converted whatever the image source, and not bound by the 15 MB.
        (200_000, header("WEBP"), S3, Route.CONVERTED_JPEG),
        (200_000, header("GIF"), BYTES, Route.CONVERTED_JPEG),
        (40 * MB, header("TIFF"), S3, Route.CONVERTED_JPEG),
        (200_000, header("BMP", 10_000, 8_000), S3, Route.CONVERTED_JPEG),
        # The size may be unknown when the header is long: Rekognition (or the conversion) checks it.
        (200_000, unreadable("JPEG", HeaderFault.TOO_LONG), S3, Route.S3_OBJECT),
        (200_000, unreadable("TIFF", HeaderFault.TOO_LONG), S3, Route.CONVERTED_JPEG),
        # A header read in part (its Exif block unreadable): sent, Rekognition decides.
        (200_000, ImageHeader("JPEG", 640, 480, None, "unreadable Exif block"), S3, Route.S3_OBJECT),
        (200_000, ImageHeader("PNG", 640, 480, None, "unreadable Exif block"), BYTES, Route.BYTES),
    ],
)
def test_images_that_can_be_sent(size: int, head: ImageHeader, rules: ImageRules, expected: Route) -> None:
    assert plan_image(size, head, rules) is expected


@pytest.mark.parametrize(
    ("size", "head", "rules", "expected"),
    [
        (0, unreadable(None, HeaderFault.EMPTY), S3, ("skipped", "EmptyObject")),
        (50, unreadable(None, HeaderFault.UNRECOGNISED), S3, ("rejected", INVALID)),
        (50, unreadable("JPEG", HeaderFault.BROKEN), BYTES, ("rejected", INVALID)),
        (50, unreadable("GIF", HeaderFault.BOMB), S3, ("rejected", "DecompressionBomb")),
        (50, header("HEIC"), S3, ("rejected", INVALID)),
        (9_000, header("JPEG", 79, 500), S3, ("rejected", PARAMETER)),
        (9_000, header("GIF", 500, 60), S3, ("rejected", PARAMETER)),
        (29_000, header("JPEG", 10_001, 100), S3, ("rejected", TOO_LARGE)),
        (69, header("PNG", 20_000, 20_000), BYTES, ("rejected", TOO_LARGE)),
        (69, header("TIFF", 200, 10_001), S3, ("rejected", TOO_LARGE)),
        (MAX_S3_OBJECT_BYTES + 1, header("JPEG"), S3, ("rejected", TOO_LARGE)),
        (MAX_S3_OBJECT_BYTES + 1, header("PNG"), BYTES, ("rejected", TOO_LARGE)),
        (6 * MB, header("JPEG"), ImageRules("bytes", convert_to_jpeg=False), ("rejected", TOO_LARGE)),
        (35, header("GIF", 9_999, 9_999), S3, ("rejected", "DecompressionBomb")),
        (6 * MB, header("JPEG", 9_999, 9_999), BYTES, ("rejected", "DecompressionBomb")),
        (200_000, header("WEBP"), NO_CONVERSION, ("skipped", "NotConverted")),
        (51 * MB, header("TIFF"), S3, ("rejected", "TooLargeToConvert")),
    ],
)
def test_images_refused_before_any_call(
    size: int, head: ImageHeader, rules: ImageRules, expected: tuple[str, str]
) -> None:
    plan = plan_image(size, head, rules)
    assert refusal(plan) == expected
    assert refusal_reason(plan)


def test_a_jpeg_over_pillows_pixel_limit_still_goes_to_rekognition_as_stored() -> None:
    # The job does not decode it; Rekognition's own limit is 10,000 px a side.
    assert plan_image(9 * MB, header("JPEG", 9_999, 9_999), S3) is Route.S3_OBJECT
    assert plan_image(4 * MB, header("JPEG", 9_999, 9_999), BYTES) is Route.BYTES


def test_reasons_say_what_was_measured() -> None:
    assert refusal_reason(plan_image(29_000, header("JPEG", 10_001, 100), S3)) == (
        "10001x100 px: over 10,000 px a side"
    )
    assert refusal_reason(plan_image(200, header("BMP"), NO_CONVERSION)) == (
        "BMP: Rekognition reads JPEG and PNG only (rekognition.convert_to_jpeg = false)"
    )
    assert "99,980,001 pixels" in refusal_reason(plan_image(35, header("GIF", 9_999, 9_999), S3))


def refusal_reason(plan: Route | Refusal) -> str:
    assert isinstance(plan, Refusal)
    return plan.reason


# --- properties over every size, format and setting -------------------------------------------------------

formats = st.sampled_from(["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
sides = st.integers(1, 30_000)
sizes = st.integers(1, 80 * MB)
rules = st.builds(
    ImageRules,
    image_source=st.sampled_from(["s3", "bytes"]),
    convert_to_jpeg=st.booleans(),
    max_convert_bytes=st.integers(1, 80 * MB),
    max_pixels=st.one_of(st.none(), st.integers(1, 200_000_000)),
)


@MANY
@given(formats, sides, sides, sizes, rules)
def test_what_is_sent_is_within_every_limit(
    fmt: str, width: int, height: int, size: int, settings_: ImageRules
) -> None:
    plan = plan_image(size, header(fmt, width, height), settings_)
    if isinstance(plan, Refusal):
        assert plan.status in ("rejected", "skipped")
        return
    assert min(width, height) >= MIN_SIDE_PX
    assert max(width, height) <= MAX_SIDE_PX
    if plan is Route.CONVERTED_JPEG:
        # The job decodes only within its own limits, and only when allowed to.
        assert settings_.convert_to_jpeg
        assert size <= settings_.max_convert_bytes
        assert settings_.max_pixels is None or width * height <= settings_.max_pixels
    else:
        # Sent as stored: only what Rekognition reads, within its limits for the way it is sent.
        assert fmt in ("JPEG", "PNG")
        assert size <= (MAX_S3_OBJECT_BYTES if plan is Route.S3_OBJECT else MAX_REQUEST_BYTES)
        assert plan.value == {"s3": "s3_object", "bytes": "bytes"}[settings_.image_source]


@MANY
@given(formats, sides, sides, sizes, rules)
def test_the_image_source_changes_how_an_image_goes_not_whether(
    fmt: str, width: int, height: int, size: int, settings_: ImageRules
) -> None:
    """Both modes analyse the same images, as long as the job may decode what bytes mode re-encodes."""
    head = header(fmt, width, height)
    as_s3 = plan_image(size, head, ImageRules("s3", True, 80 * MB, None))
    as_bytes = plan_image(size, head, ImageRules("bytes", True, 80 * MB, None))
    assert isinstance(as_s3, Refusal) == isinstance(as_bytes, Refusal)
    if isinstance(as_s3, Refusal):
        assert as_s3 == as_bytes


@MANY
@given(st.sampled_from(["WEBP", "GIF", "TIFF", "BMP"]), sides, sides, sizes, rules)
def test_without_conversion_other_formats_are_skipped_never_sent(
    fmt: str, width: int, height: int, size: int, settings_: ImageRules
) -> None:
    off = ImageRules(settings_.image_source, False, settings_.max_convert_bytes, settings_.max_pixels)
    plan = plan_image(size, header(fmt, width, height), off)
    assert isinstance(plan, Refusal)
    assert plan.code in ("NotConverted", "InvalidParameterException", "ImageTooLargeException")
