"""batch.core.geometry: round trips in all eight orientations, a pixel-level check against Pillow, and the
frame rules of BoxPlacement.for_response (Developer Guide "images-orientation")."""

from __future__ import annotations

import math

import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageOps

from batch.core.geometry import (
    ORIENTATIONS,
    Box,
    BoxPlacement,
    inverse_orientation,
    stored_to_upright_box,
    stored_to_upright_point,
    swaps_axes,
    upright_size,
    upright_to_stored_box,
    upright_to_stored_point,
)

MANY = settings(max_examples=examples(500), deadline=None)

orientations = st.sampled_from(ORIENTATIONS)
# Rekognition's ratios may be negative or past 1 for faces at the edge: test beyond [0, 1].
coordinates = st.floats(min_value=-2.0, max_value=3.0, allow_nan=False)
extents = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)
boxes = st.builds(Box, left=coordinates, top=coordinates, width=extents, height=extents)
sizes = st.integers(min_value=1, max_value=10_000)

# What Pillow's ImageOps.exif_transpose applies to the stored pixels for each orientation.
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Its inverse: stored pixels from upright ones.
UNDO_EXIF_TRANSPOSE = {
    **EXIF_TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def boxes_close(a: Box, b: Box) -> bool:
    return all(close(x, y) for x, y in zip(a, b, strict=True))


# --- pure transforms ------------------------------------------------------------------------------


@MANY
@given(orientations, coordinates, coordinates)
def test_point_round_trip(orientation: int, x: float, y: float) -> None:
    sx, sy = upright_to_stored_point(*stored_to_upright_point(x, y, orientation), orientation)
    assert close(sx, x)
    assert close(sy, y)
    ux, uy = stored_to_upright_point(*upright_to_stored_point(x, y, orientation), orientation)
    assert close(ux, x)
    assert close(uy, y)


@MANY
@given(orientations, boxes)
def test_box_round_trip(orientation: int, box: Box) -> None:
    assert boxes_close(upright_to_stored_box(stored_to_upright_box(box, orientation), orientation), box)
    assert boxes_close(stored_to_upright_box(upright_to_stored_box(box, orientation), orientation), box)


@MANY
@given(orientations, boxes)
def test_box_corners_are_the_transformed_points(orientation: int, box: Box) -> None:
    upright = stored_to_upright_box(box, orientation)
    corners = [
        stored_to_upright_point(box.left, box.top, orientation),
        stored_to_upright_point(box.left + box.width, box.top + box.height, orientation),
    ]
    assert close(upright.left, min(x for x, _ in corners))
    assert close(upright.top, min(y for _, y in corners))
    assert close(upright.left + upright.width, max(x for x, _ in corners))
    assert close(upright.top + upright.height, max(y for _, y in corners))


@MANY
@given(orientations, sizes, sizes)
def test_upright_size_swaps_for_5_to_8(orientation: int, width: int, height: int) -> None:
    expected = (height, width) if orientation >= 5 else (width, height)
    assert upright_size(width, height, orientation) == expected
    assert swaps_axes(orientation) == (orientation >= 5)


def test_inverse_orientation_undoes_each_quarter_turn() -> None:
    assert [inverse_orientation(o) for o in ORIENTATIONS] == [1, 2, 3, 4, 5, 8, 7, 6]


@pytest.mark.parametrize("bad", [0, 9, -1])
def test_an_orientation_outside_1_to_8_is_an_error(bad: int) -> None:
    with pytest.raises(ValueError, match="orientation"):
        stored_to_upright_point(0.5, 0.5, bad)


# --- against Pillow's pixels ----------------------------------------------------------------------


def test_the_transpose_table_is_what_exif_transpose_does() -> None:
    """Guards the tables below: a stored image with orientation o, exif_transposed, is our upright."""
    upright = Image.new("L", (5, 3))
    upright.putdata(range(15))
    for orientation, undo in UNDO_EXIF_TRANSPOSE.items():
        stored = upright.transpose(undo)
        stored.getexif()[0x0112] = orientation
        assert stored.size == upright_size(5, 3, inverse_orientation(orientation))
        restored = ImageOps.exif_transpose(stored)
        assert restored.size == upright.size, orientation
        assert restored.tobytes() == upright.tobytes(), orientation


@st.composite
def pictures(draw: st.DrawFn) -> tuple[int, int, int, tuple[int, int, int, int]]:
    """(orientation, upright width, upright height, rectangle x0, y0, x1, y1 exclusive) in pixels."""
    orientation = draw(orientations)
    width, height = draw(st.integers(2, 48)), draw(st.integers(2, 48))
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    return orientation, width, height, (x0, y0, x1, y1)


@MANY
@given(pictures())
def test_upright_to_stored_box_matches_pillow(
    picture: tuple[int, int, int, tuple[int, int, int, int]],
) -> None:
    orientation, width, height, (x0, y0, x1, y1) = picture
    upright = Image.new("L", (width, height), 0)
    ImageDraw.Draw(upright).rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    stored = upright.transpose(UNDO_EXIF_TRANSPOSE[orientation]) if orientation != 1 else upright
    stored_width, stored_height = stored.size
    assert upright_size(stored_width, stored_height, orientation) == (width, height)

    left, top, right, bottom = stored.getbbox()  # right/bottom exclusive
    box = Box(x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height)
    mapped = upright_to_stored_box(box, orientation)
    assert abs(mapped.left * stored_width - left) <= 1
    assert abs(mapped.top * stored_height - top) <= 1
    assert abs(mapped.width * stored_width - (right - left)) <= 1
    assert abs(mapped.height * stored_height - (bottom - top)) <= 1

    # The same through BoxPlacement, for a JPEG whose Exif orientation Rekognition applied.
    placement = BoxPlacement.for_response(
        image_format="JPEG",
        stored_width=stored_width,
        stored_height=stored_height,
        exif_orientation=orientation,
        orientation_correction=None,
    )
    columns = placement.box_columns(
        {"Left": box.left, "Top": box.top, "Width": box.width, "Height": box.height}
    )
    assert (columns["box_left_px"], columns["box_top_px"]) == (x0, y0)
    assert (columns["box_width_px"], columns["box_height_px"]) == (x1 - x0, y1 - y0)
    assert abs(columns["stored_box_left_px"] - left) <= 1
    assert abs(columns["stored_box_top_px"] - top) <= 1
    assert abs(columns["stored_box_width_px"] - (right - left)) <= 1
    assert abs(columns["stored_box_height_px"] - (bottom - top)) <= 1


# --- BoxPlacement: which frame a response is in ---------------------------------------------------

BOX = {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4}
STORED_W, STORED_H = 640, 480


def placement(fmt: str | None, exif: int | None, correction: str | None = None) -> BoxPlacement:
    return BoxPlacement.for_response(
        image_format=fmt,
        stored_width=STORED_W,
        stored_height=STORED_H,
        exif_orientation=exif,
        orientation_correction=correction,
    )


def half_up(value: float) -> int:
    return math.floor(value + 0.5)


@pytest.mark.parametrize("fmt", ["JPEG", "MPO", "jpeg"])
def test_jpeg_with_exif_6_boxes_are_already_upright(fmt: str) -> None:
    columns = placement(fmt, 6).box_columns(BOX)
    # Upright image is 480 wide, 640 high: the box is used as returned, scaled by the upright size.
    assert (columns["box_left"], columns["box_top"], columns["box_width"], columns["box_height"]) == (
        0.1,
        0.2,
        0.3,
        0.4,
    )
    assert columns["box_left_px"] == half_up(0.1 * 480)
    assert columns["box_top_px"] == half_up(0.2 * 640)
    assert columns["box_width_px"] == half_up(0.3 * 480)
    assert columns["box_height_px"] == half_up(0.4 * 640)
    # In the stored array (rotate back 90° counter-clockwise): left = top, top = 1 - (left + width).
    assert columns["stored_box_left_px"] == half_up(0.2 * 640)
    assert columns["stored_box_top_px"] == half_up((1 - 0.4) * 480)
    assert columns["stored_box_width_px"] == half_up(0.4 * 640)
    assert columns["stored_box_height_px"] == half_up(0.3 * 480)


def test_png_with_exif_6_boxes_are_turned_upright() -> None:
    placed = placement("PNG", 6)
    assert placed.response_frame == "stored"
    columns = placed.box_columns(BOX)
    # Stored -> upright for a 90° clockwise turn: left = 1 - (top + height), top = left.
    assert math.isclose(columns["box_left"], 1 - (0.2 + 0.4))
    assert math.isclose(columns["box_top"], 0.1)
    assert (columns["box_width"], columns["box_height"]) == (0.4, 0.3)
    assert (columns["stored_box_left_px"], columns["stored_box_top_px"]) == (half_up(64), half_up(96))
    assert (columns["stored_box_width_px"], columns["stored_box_height_px"]) == (192, 192)


def developer_guide_left_top(
    rotation: str, box: dict[str, float], width: int, height: int
) -> tuple[float, float]:
    """The Developer Guide's formulas (python-image-orientation-bounding-box.py), imageWidth/Height stored."""
    if rotation == "ROTATE_0":
        return width * box["Left"], height * box["Top"]
    if rotation == "ROTATE_90":
        return height * (1 - (box["Top"] + box["Height"])), width * box["Left"]
    if rotation == "ROTATE_180":
        return width - (width * (box["Left"] + box["Width"])), height * (1 - (box["Top"] + box["Height"]))
    return height * box["Top"], width * (1 - box["Left"] - box["Width"])  # ROTATE_270


@pytest.mark.parametrize("rotation", ["ROTATE_0", "ROTATE_90", "ROTATE_180", "ROTATE_270"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_legacy_orientation_correction_follows_the_developer_guide(rotation: str, fmt: str) -> None:
    columns = placement(fmt, None, rotation).box_columns(BOX)
    left, top = developer_guide_left_top(rotation, BOX, STORED_W, STORED_H)
    assert columns["box_left_px"] == half_up(left)
    assert columns["box_top_px"] == half_up(top)
    if rotation in ("ROTATE_90", "ROTATE_270"):
        # Upright width is the box's Height times the stored height (the AWS example prints them swapped).
        assert columns["box_width_px"] == half_up(BOX["Height"] * STORED_H)
        assert columns["box_height_px"] == half_up(BOX["Width"] * STORED_W)
    else:
        assert columns["box_width_px"] == half_up(BOX["Width"] * STORED_W)
        assert columns["box_height_px"] == half_up(BOX["Height"] * STORED_H)
    # The stored columns are the box as returned.
    assert columns["stored_box_left_px"] == half_up(0.1 * STORED_W)
    assert columns["stored_box_width_px"] == half_up(0.3 * STORED_W)


def test_exif_less_jpeg_without_correction_is_identity() -> None:
    placed = placement("JPEG", None)
    assert (placed.orientation, placed.upright_width, placed.upright_height) == (1, STORED_W, STORED_H)
    columns = placed.box_columns(BOX)
    assert columns["box_left_px"] == columns["stored_box_left_px"] == 64
    assert columns["box_height_px"] == columns["stored_box_height_px"] == 192


def test_a_jpeg_exif_orientation_wins_over_a_legacy_correction() -> None:
    placed = placement("JPEG", 8, "ROTATE_90")
    assert (placed.orientation, placed.response_frame) == (8, "upright")


def test_a_png_exif_orientation_wins_over_a_legacy_correction() -> None:
    placed = placement("PNG", 3, "ROTATE_90")
    assert (placed.orientation, placed.response_frame) == (3, "stored")


@pytest.mark.parametrize("bad_tag", [0, 9, 65535])
def test_an_invalid_exif_tag_counts_as_none(bad_tag: int) -> None:
    assert placement("JPEG", bad_tag) == placement("JPEG", None)


def test_an_unknown_orientation_correction_is_an_error() -> None:
    with pytest.raises(ValueError, match="ROTATE_45"):
        placement("PNG", None, "ROTATE_45")


@pytest.mark.parametrize("box", [None, {}, {"Left": 0.1, "Top": 0.2, "Width": 0.3}, {**BOX, "Height": None}])
def test_a_missing_box_gives_null_columns(box: dict[str, float] | None) -> None:
    columns = placement("JPEG", 6).box_columns(box)
    assert len(columns) == 12
    assert set(columns.values()) == {None}


def test_boxes_past_the_edge_are_not_clipped() -> None:
    columns = placement("PNG", None).box_columns({"Left": -0.05, "Top": 0.9, "Width": 0.2, "Height": 0.3})
    assert (columns["box_left_px"], columns["box_top_px"]) == (-32, 432)
    assert columns["box_top"] + columns["box_height"] > 1


def test_a_pixel_that_does_not_fit_int32_is_null() -> None:
    columns = placement("PNG", None).box_columns({"Left": 1e12, "Top": 0.0, "Width": 0.1, "Height": 0.1})
    assert columns["box_left"] == 1e12
    assert columns["box_left_px"] is None
    assert columns["box_width_px"] == 64


placements = st.builds(
    BoxPlacement.for_response,
    image_format=st.sampled_from(["JPEG", "PNG", None]),
    stored_width=sizes,
    stored_height=sizes,
    exif_orientation=st.none() | orientations,
    orientation_correction=st.none() | st.sampled_from(["ROTATE_0", "ROTATE_90", "ROTATE_180", "ROTATE_270"]),
)


@MANY
@given(placements, coordinates, coordinates)
def test_point_columns_agree_with_box_columns(placed: BoxPlacement, x: float, y: float) -> None:
    """A landmark at a box's corner and a zero-size box there land on the same pixels."""
    point = placed.point_columns(x, y)
    box = placed.box_columns({"Left": x, "Top": y, "Width": 0.0, "Height": 0.0})
    assert (point["x"], point["y"]) == (box["box_left"], box["box_top"])
    assert (point["x_px"], point["y_px"]) == (box["box_left_px"], box["box_top_px"])
    assert (point["stored_x_px"], point["stored_y_px"]) == (
        box["stored_box_left_px"],
        box["stored_box_top_px"],
    )
    upright = upright_size(placed.stored_width, placed.stored_height, placed.orientation)
    assert (placed.upright_width, placed.upright_height) == upright


def test_point_columns_with_a_missing_coordinate_are_null() -> None:
    assert set(placement("JPEG", 6).point_columns(None, 0.5).values()) == {None}


def test_an_unknown_size_gives_normalised_columns_and_null_pixels() -> None:
    placed = BoxPlacement.for_response(
        image_format="PNG", stored_width=0, stored_height=0, exif_orientation=6, orientation_correction=None
    )
    columns = placed.box_columns(BOX)
    assert math.isclose(columns["box_left"], 1 - (0.2 + 0.4))
    assert [v for k, v in columns.items() if k.endswith("_px")] == [None] * 8
    assert placed.point_columns(0.5, 0.5)["x_px"] is None


def test_a_negative_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        BoxPlacement(stored_width=-1, stored_height=10)
