from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from batch.core.image_header import UNREADABLE_EXIF, HeaderFault, HeaderIncomplete, probe, sniff_format
from local_stack.samples import png_claiming

MANY = settings(max_examples=60, deadline=None)


def encoded(fmt: str, size=(320, 200), orientation: int | None = None, **save) -> bytes:
    image = Image.new("RGB", size, (120, 110, 100))
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_and_stored_size(orientation: int) -> None:
    header = probe(encoded("JPEG", orientation=orientation), complete=True)
    assert (header.format, header.stored_width, header.stored_height) == ("JPEG", 320, 200)
    assert header.exif_orientation == orientation


def test_missing_tag_means_orientation_1_but_is_told_apart() -> None:
    header = probe(encoded("JPEG"), complete=True)
    assert header.exif_orientation is None
    assert header.orientation == 1


def test_png_with_and_without_exif() -> None:
    assert probe(encoded("PNG"), complete=True).exif_orientation is None
    assert probe(encoded("PNG", orientation=6), complete=True).exif_orientation == 6


def test_a_big_exif_block_needs_a_longer_read() -> None:
    # An ICC profile of 100 kB before the frame header: the first 64 KiB do not hold the header.
    data = encoded("JPEG", orientation=6, icc_profile=b"\0" * 100_000)
    with pytest.raises(HeaderIncomplete):
        probe(data[: 64 * 1024], complete=False)
    assert probe(data[: 256 * 1024], complete=False).exif_orientation == 6


def test_bad_inputs_are_described_not_raised() -> None:
    assert probe(b"", complete=True).fault is HeaderFault.EMPTY
    text = probe(b"just some text, not an image", complete=True)
    assert (text.format, text.fault) == (None, HeaderFault.UNRECOGNISED)
    assert text.problem == "unrecognised image format"
    broken = probe(encoded("JPEG")[:40], complete=True)
    assert (broken.format, broken.fault) == ("JPEG", HeaderFault.BROKEN)
    assert broken.problem.startswith("broken image header")


def test_a_cut_header_asks_for_more_unless_the_object_ends_there() -> None:
    for fmt in ("JPEG", "PNG", "GIF", "TIFF", "BMP", "WEBP"):
        head = encoded(fmt)[:20]
        with pytest.raises(HeaderIncomplete):
            probe(head, complete=False)
        assert probe(head, complete=True).fault is HeaderFault.BROKEN, fmt


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "BMP", "WEBP"])
def test_the_format_comes_from_the_bytes_not_the_name(fmt: str) -> None:
    header = probe(encoded(fmt, size=(123, 45)), complete=True)
    assert (header.format, header.stored_width, header.stored_height) == (fmt, 123, 45)
    assert header.fault is None
    assert sniff_format(encoded(fmt)) == fmt


def test_formats_the_job_does_not_handle_are_unrecognised() -> None:
    for fmt in ("PPM", "ICO", "PCX", "TGA"):
        assert probe(encoded(fmt, size=(64, 64)), complete=True).fault is HeaderFault.UNRECOGNISED, fmt


def test_a_multi_picture_jpeg_is_a_jpeg() -> None:
    data = encoded("MPO", save_all=True, append_images=[Image.new("RGB", (320, 200))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert probe(data, complete=True).format == "JPEG"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_gives_its_stored_size_and_orientation_tag(orientation: int) -> None:
    # Pillow reports a TIFF's size upright (swapped for 5-8): the header must give the stored array's.
    data = encoded("TIFF", size=(300, 200), tiffinfo={0x0112: orientation})
    header = probe(data, complete=True)
    assert (header.stored_width, header.stored_height, header.exif_orientation) == (300, 200, orientation)


@MANY
@given(
    width=st.integers(1, 600),
    height=st.integers(1, 600),
    kind=st.sampled_from([{"lossless": True}, {"quality": 50}, {"exif": b"Exif\0\0MM\0*\0\0\0\x08\0\0"}]),
)
def test_webp_size_from_its_first_chunk_matches_pillow(width: int, height: int, kind: dict[str, Any]) -> None:
    data = encoded("WEBP", size=(width, height), **kind)
    with Image.open(io.BytesIO(data)) as image:
        assert probe(data[:64], complete=False).stored_width == image.width
        assert (probe(data, complete=True).stored_height, image.height) == (height, height)


def test_a_webp_head_is_enough_and_a_bad_chunk_is_broken() -> None:
    data = encoded("WEBP", size=(640, 480))
    assert probe(data[:30], complete=False).stored_width == 640  # Pillow would need the whole file
    bad = data[:12] + b"XXXX" + data[16:]
    assert probe(bad, complete=True).fault is HeaderFault.BROKEN


def test_a_huge_claimed_size_is_reported_as_it_is() -> None:
    # Image.open would raise DecompressionBombError and hide the size; the header gives it, decoding
    # nothing, and the size limits (batch.core.image_checks) refuse it.
    png = png_claiming(30000, 30000)
    assert len(png) < 200
    header = probe(png, complete=True)
    assert (header.stored_width, header.stored_height, header.fault) == (30000, 30000, None)


def test_a_gif_frame_past_its_screen_is_a_bomb() -> None:
    # Pillow grows a GIF to hold a frame bigger than its screen, after its own bomb check.
    frame = b"," + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x02\x02\x44\x01\x00"
    gif = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff" + frame + b";"
    header = probe(gif, complete=True)
    assert (header.format, header.fault) == ("GIF", HeaderFault.BOMB)


def with_exif_block(data: bytes, block: bytes) -> bytes:
    """A JPEG with `block` as its Exif APP1 segment's payload (after `Exif\\0\\0`), right after SOI."""
    payload = b"Exif\0\0" + block
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


#: Exif blocks that do not parse: bytes that are no TIFF header, a header cut short, a byte-order mark
#: alone. Pillow opens and decodes each file, and `ImageOps.exif_transpose` leaves it as stored.
GARBAGE_EXIF = [b"\x13\x37" * 40, b"II", b"MM\0", b"\xff" * 200]


@pytest.mark.parametrize("block", GARBAGE_EXIF)
def test_an_unreadable_exif_block_leaves_a_readable_header_with_orientation_1(block: bytes) -> None:
    data = with_exif_block(encoded("JPEG", size=(320, 200)), block)
    with Image.open(io.BytesIO(data)) as image:  # Pillow decodes it: Rekognition gets to decide
        image.load()
        assert ImageOps.exif_transpose(image).size == (320, 200)
    for complete in (True, False):  # the block was read whole: never a reason to read more
        header = probe(data, complete=complete)
        assert (header.format, header.stored_width, header.stored_height) == ("JPEG", 320, 200)
        assert (header.fault, header.exif_orientation, header.orientation) == (None, None, 1)
        assert str(header.problem).startswith(UNREADABLE_EXIF)


def test_a_readable_exif_block_leaves_no_note() -> None:
    assert probe(encoded("JPEG", orientation=6), complete=True).problem is None
