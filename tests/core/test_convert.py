"""batch.core.convert: upright JPEG copies within 5 MB, first frame only, bad files refused, no crash."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from batch.core.convert import UnusableImage, forbid_decompression_bombs, to_jpeg
from batch.core.image_header import probe
from local_stack.samples import STORE_TRANSFORM, gif_claiming

LIMIT = Image.MAX_IMAGE_PIXELS
RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def upright_picture(size: tuple[int, int] = (300, 200), colour: tuple[int, int, int] = RED) -> Image.Image:
    """Grey with a coloured block in the top-left corner of the upright picture."""
    image = Image.new("RGB", size, GREY)
    image.paste(colour, (0, 0, size[0] // 5, size[1] // 5))
    return image


def stored(picture: Image.Image, fmt: str, orientation: int = 1, **options: object) -> bytes:
    """`picture` stored as `fmt` the way a camera would: turned by the inverse of `orientation`, tagged."""
    pixels = picture.transpose(STORE_TRANSFORM[orientation]) if orientation != 1 else picture
    if fmt == "TIFF":
        options["tiffinfo"] = {0x0112: orientation}
    elif fmt in ("JPEG", "PNG", "WEBP"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    pixels.save(buffer, fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.getexif().get(0x0112) is None  # the copy carries no orientation to apply again
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def corner_colour(pixels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(c) for c in pixels[5, 5])


def close(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, expected, strict=True))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["TIFF", "WEBP", "PNG", "JPEG"])
def test_the_copy_is_upright_and_the_source_facts_are_the_stored_ones(fmt: str, orientation: int) -> None:
    options = {"lossless": True} if fmt == "WEBP" else {}
    converted = to_jpeg(stored(upright_picture(), fmt, orientation, **options), fmt, max_pixels=LIMIT)
    pixels = decoded(converted.data)
    assert (converted.width, converted.height) == (300, 200) == (pixels.shape[1], pixels.shape[0])
    assert close(corner_colour(pixels), RED)
    assert close(tuple(int(c) for c in pixels[150, 250]), GREY)
    stored_size = (200, 300) if orientation >= 5 else (300, 200)
    source = converted.source
    assert (source.format, source.stored_width, source.stored_height) == (fmt, *stored_size)
    assert source.exif_orientation == orientation


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP", "MPO"])
def test_only_the_first_frame_is_converted(fmt: str) -> None:
    first, second = upright_picture(colour=RED), upright_picture(colour=BLUE)
    buffer = io.BytesIO()
    first.save(buffer, fmt, save_all=True, append_images=[second])
    with Image.open(io.BytesIO(buffer.getvalue())) as check:
        assert getattr(check, "n_frames", 1) == 2
    converted = to_jpeg(buffer.getvalue(), "JPEG" if fmt == "MPO" else fmt, max_pixels=LIMIT)
    assert close(corner_colour(decoded(converted.data)), RED)


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (120, 100), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 20, 20))
    for fmt in ("PNG", "GIF", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        pixels = decoded(to_jpeg(buffer.getvalue(), fmt, max_pixels=LIMIT).data)
        assert close(corner_colour(pixels), RED), fmt
        assert close(tuple(int(c) for c in pixels[80, 100]), (255, 255, 255)), fmt


@settings(max_examples=15, deadline=None)
@given(width=st.integers(200, 500), height=st.integers(200, 500), budget=st.integers(60_000, 150_000))
def test_a_copy_too_big_is_downscaled_to_fit_keeping_its_aspect(width: int, height: int, budget: int) -> None:
    noise = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "BMP")  # noise: the worst case for JPEG
    converted = to_jpeg(buffer.getvalue(), "BMP", max_pixels=LIMIT, max_bytes=budget)
    assert len(converted.data) <= budget
    assert converted.width <= width
    assert converted.height <= height
    aspect_error = abs(converted.width / converted.height - width / height)
    assert aspect_error < 2 / min(converted.width, converted.height)
    assert decoded(converted.data).shape[:2] == (converted.height, converted.width)
    assert (converted.source.stored_width, converted.source.stored_height) == (width, height)


def test_a_copy_that_cannot_fit_without_going_under_80_px_is_refused() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (90, 400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    with pytest.raises(UnusableImage) as refused:
        to_jpeg(buffer.getvalue(), "PNG", max_pixels=LIMIT, max_bytes=5_000)
    assert refused.value.refusal.code == "ImageTooLargeException"


def test_a_truncated_file_is_refused_by_the_full_decode() -> None:
    for fmt in ("GIF", "TIFF", "BMP", "WEBP", "PNG", "JPEG"):
        data = stored(upright_picture((320, 240)), fmt)
        cut = data[: len(data) * 6 // 10]
        assert probe(cut, complete=True).stored_width == 320  # the header looks fine
        with pytest.raises(UnusableImage) as refused:
            to_jpeg(cut, fmt, max_pixels=LIMIT)
        assert refused.value.refusal.code == "InvalidImageFormatException", fmt


def test_a_file_of_another_format_than_its_magic_said_is_refused() -> None:
    with pytest.raises(UnusableImage) as refused:
        to_jpeg(stored(upright_picture(), "PNG"), "GIF", max_pixels=LIMIT)
    assert refused.value.refusal.code == "InvalidImageFormatException"


def test_more_pixels_than_the_limit_are_never_decoded() -> None:
    with pytest.raises(UnusableImage) as refused:
        to_jpeg(gif_claiming(9_999, 9_999), "GIF", max_pixels=LIMIT)
    assert refused.value.refusal.code == "DecompressionBomb"
    # A tighter limit is honoured as given, whatever Pillow's own.
    with pytest.raises(UnusableImage) as refused:
        to_jpeg(stored(upright_picture(), "BMP"), "BMP", max_pixels=50_000)
    assert refused.value.refusal.code == "DecompressionBomb"


def test_sides_out_of_rekognitions_range_are_refused_from_the_header() -> None:
    for size, code in (((10_001, 90), "ImageTooLargeException"), ((79, 300), "InvalidParameterException")):
        with pytest.raises(UnusableImage) as refused:
            to_jpeg(stored(Image.new("RGB", size, GREY), "BMP"), "BMP", max_pixels=LIMIT)
        assert refused.value.refusal.code == code


def test_the_bomb_warning_is_made_an_error_process_wide() -> None:
    with warnings.catch_warnings():  # the test restores the filters; the job sets them once per process
        warnings.resetwarnings()
        forbid_decompression_bombs()
        with pytest.raises(Image.DecompressionBombWarning):
            warnings.warn("big", Image.DecompressionBombWarning, stacklevel=1)
