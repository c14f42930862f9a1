"""batch.report.thumbnails: every orientation and format comes out upright, bad files say why."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from batch.core.geometry import ORIENTATIONS
from batch.report.thumbnails import THUMBNAIL_SIDE, ThumbnailError, upright_thumbnail
from local_stack.samples import BOX, COLOURS, LINE, Spec, encode, png_claiming, render_upright

FACE = ("face", 66, 88, "3:4")


def colour_at_centres(jpeg: bytes, spec: Spec) -> list[tuple[str, Any, tuple[int, int, int]]]:
    """(kind, thumbnail pixel at the object's upright centre, the object's colour) for each object."""
    picture = Image.open(io.BytesIO(jpeg)).convert("RGB")
    _, objects = render_upright(spec)
    found = []
    for obj in objects:
        left, top, width, height = obj.box
        x, y = (left + width / 2) * picture.width, (top + height / 2) * picture.height
        found.append((obj.kind, picture.getpixel((int(x), int(y))), COLOURS[obj.kind]))
    return found


def assert_upright(jpeg: bytes, spec: Spec) -> None:
    for kind, got, want in colour_at_centres(jpeg, spec):
        assert sum(abs(a - b) for a, b in zip(got, want, strict=True)) < 90, (spec.name, kind, got, want)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_a_jpeg_is_turned_by_its_orientation(orientation: int) -> None:
    spec = Spec(
        f"exif-{orientation}", (480, 320), (FACE, BOX, LINE), orientation=orientation, seed=orientation
    )
    upright, _ = render_upright(spec)
    thumbnail = upright_thumbnail(encode(upright, "JPEG", orientation), orientation)
    assert (thumbnail.width, thumbnail.height) == (THUMBNAIL_SIDE, round(THUMBNAIL_SIDE * 320 / 480))
    assert_upright(thumbnail.jpeg, spec)


@pytest.mark.parametrize(("fmt", "orientation"), [("PNG", None), ("TIFF", 6), ("WEBP", None), ("GIF", None)])
def test_other_formats_come_out_upright_once(fmt: str, orientation: int | None) -> None:
    """Pillow turns a TIFF as it loads it: the thumbnail must not turn it a second time."""
    spec = Spec(f"x.{fmt}", (360, 240), (FACE, BOX), fmt=fmt, orientation=orientation, seed=3)
    upright, _ = render_upright(spec)
    thumbnail = upright_thumbnail(encode(upright, fmt, orientation), orientation or 1)
    assert thumbnail.width > thumbnail.height
    assert_upright(thumbnail.jpeg, spec)


def test_what_cannot_be_shown_says_why() -> None:
    with pytest.raises(ThumbnailError, match="not an image"):
        upright_thumbnail(b"plain text, named .jpg", 1)
    with pytest.raises(ThumbnailError, match="more pixels"):
        upright_thumbnail(png_claiming(20_000, 20_000), 1)
    whole = encode(render_upright(Spec("cut", (320, 240), (BOX,)))[0], "JPEG", None)
    with pytest.raises(ThumbnailError, match="cannot decode the JPEG"):
        upright_thumbnail(whole[: len(whole) // 2], 1)
