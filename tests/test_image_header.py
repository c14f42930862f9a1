from __future__ import annotations

import io

import pytest
from PIL import Image

from batch.image_header import HeaderIncomplete, probe


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
    assert probe(b"", complete=True).problem == "zero-byte object"
    assert probe(b"just some text, not an image", complete=True).problem == "unrecognised image format"
    assert probe(encoded("JPEG")[:40], complete=True).problem.startswith("broken image header")
    assert probe(encoded("WEBP"), complete=True).format == "WEBP"


def test_a_decompression_bomb_header_is_reported() -> None:
    # A PNG header claiming 30000 x 30000 pixels: rejected from the header, nothing decoded.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    assert len(png) < 200
    assert probe(png, complete=True).problem.startswith("decompression bomb")
