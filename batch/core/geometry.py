"""Box geometry: where a Rekognition box lies in the upright image and in the stored pixel array.

Two frames: **stored**, the pixel array as encoded in the file (what a tool that ignores Exif shows), and
**upright**, the image as a person sees it. An orientation is an Exif orientation value (Exif 2.32, tag
0x0112, as Pillow's `ImageOps.exif_transpose` applies it): 1 identity, 2 mirror horizontal, 3 rotate
180°, 4 mirror vertical, 5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise;
5–8 swap width and height (`upright_size`). Coordinates are normalised (ratios, as Rekognition returns
them) unless a name ends in `_px`, and never clipped: boxes past the edge are transformed as given.
Which frame a response is in is decided by `BoxPlacement.for_response`, from the Developer Guide
(https://docs.aws.amazon.com/rekognition/latest/dg/images-orientation.html) and `OrientationCorrection`
in botocore's model (`rekognition/2016-06-27/service-2.json`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = [
    "LEGACY_CORRECTION_TO_ORIENTATION",
    "ORIENTATIONS",
    "Box",
    "BoxPlacement",
    "Frame",
    "inverse_orientation",
    "stored_to_upright_box",
    "stored_to_upright_point",
    "swaps_axes",
    "upright_size",
    "upright_to_stored_box",
    "upright_to_stored_point",
]

#: The eight Exif orientation values.
ORIENTATIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)

#: The legacy `OrientationCorrection` values as the Exif orientation that turns the stored image
#: upright. The Developer Guide's formulas for ROTATE_90 are a 90° clockwise turn (Exif 6), ROTATE_270
#: a 90° counter-clockwise turn (Exif 8); see research notes §1 "derived".
LEGACY_CORRECTION_TO_ORIENTATION: Mapping[str, int] = {
    "ROTATE_0": 1,
    "ROTATE_90": 6,
    "ROTATE_180": 3,
    "ROTATE_270": 8,
}

# stored (x, y) -> upright (x, y), normalised, for each orientation.
_STORED_TO_UPRIGHT: Mapping[int, Callable[[float, float], tuple[float, float]]] = {
    1: lambda x, y: (x, y),
    2: lambda x, y: (1.0 - x, y),
    3: lambda x, y: (1.0 - x, 1.0 - y),
    4: lambda x, y: (x, 1.0 - y),
    5: lambda x, y: (y, x),
    6: lambda x, y: (1.0 - y, x),
    7: lambda x, y: (1.0 - y, 1.0 - x),
    8: lambda x, y: (y, 1.0 - x),
}

# Every orientation is its own inverse except the two quarter turns, which undo each other.
_INVERSE: Mapping[int, int] = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

Frame = Literal["upright", "stored"]


class Box(NamedTuple):
    """An axis-aligned box, normalised to the size of the frame it is in (Rekognition's `BoundingBox`)."""

    left: float
    top: float
    width: float
    height: float


def _check(orientation: int) -> int:
    if orientation not in _STORED_TO_UPRIGHT:
        raise ValueError(f"orientation must be an Exif orientation 1..8, got {orientation!r}")
    return orientation


def swaps_axes(orientation: int) -> bool:
    """True for the orientations (5–8) whose upright image has the stored height as its width."""
    return _check(orientation) >= 5


def inverse_orientation(orientation: int) -> int:
    """The orientation that undoes `orientation` (6 and 8 swap; every other one is its own inverse)."""
    return _INVERSE[_check(orientation)]


def upright_size(stored_width: int, stored_height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of the image as displayed; swapped for orientations 5–8."""
    if swaps_axes(orientation):
        return stored_height, stored_width
    return stored_width, stored_height


def stored_to_upright_point(x: float, y: float, orientation: int) -> tuple[float, float]:
    """Map a normalised point of the stored pixel array to the upright image."""
    return _STORED_TO_UPRIGHT[_check(orientation)](x, y)


def upright_to_stored_point(x: float, y: float, orientation: int) -> tuple[float, float]:
    """Map a normalised point of the upright image back to the stored pixel array."""
    return _STORED_TO_UPRIGHT[inverse_orientation(orientation)](x, y)


def _transform_box(box: Box, orientation: int) -> Box:
    """Apply the stored->upright transform of `orientation` to a box (corners, then min/max)."""
    x1, y1 = _STORED_TO_UPRIGHT[orientation](box.left, box.top)
    x2, y2 = _STORED_TO_UPRIGHT[orientation](box.left + box.width, box.top + box.height)
    width, height = (box.height, box.width) if orientation >= 5 else (box.width, box.height)
    return Box(left=min(x1, x2), top=min(y1, y2), width=width, height=height)


def stored_to_upright_box(box: Box, orientation: int) -> Box:
    """Map a normalised box of the stored pixel array to the upright image (width/height swap for 5–8)."""
    return _transform_box(box, _check(orientation))


def upright_to_stored_box(box: Box, orientation: int) -> Box:
    """Map a normalised box of the upright image to the stored pixel array, e.g. to draw it with a tool
    that ignores Exif."""
    return _transform_box(box, inverse_orientation(orientation))


def _to_px(ratio: float, size: int) -> int | None:
    """A normalised coordinate in whole pixels, rounded half up; None when the size is unknown (0) or
    the result cannot be an int32."""
    if size <= 0:
        return None
    value = ratio * size
    if not math.isfinite(value):
        return None
    pixels = math.floor(value + 0.5)
    return pixels if _INT32_MIN <= pixels <= _INT32_MAX else None


def _as_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


_BOX_COLUMNS = (
    "box_left", "box_top", "box_width", "box_height",
    "box_left_px", "box_top_px", "box_width_px", "box_height_px",
    "stored_box_left_px", "stored_box_top_px", "stored_box_width_px", "stored_box_height_px",
)  # fmt: skip


@dataclass(frozen=True)
class BoxPlacement:
    """How to read the boxes of ONE Rekognition response for ONE image.

    `orientation` is the Exif-style transform from the stored pixel array to the upright image
    (the file's Exif orientation, or the one equivalent to a legacy `OrientationCorrection`).
    `response_frame` says which of the two frames the response's boxes are in. Build it with
    `for_response`, which encodes AWS's rules; construct it directly only in tests.

    A stored size of 0 means unknown (the header could not be read): the normalised columns are still
    filled, every pixel column is None.

    For a legacy correction the "upright" frame is the one Rekognition estimated (the image turned by
    the correction), so `upright_width`/`upright_height` are swapped for ROTATE_90/270 even though the
    file has no Exif orientation.
    """

    stored_width: int
    stored_height: int
    orientation: int = 1
    response_frame: Frame = "upright"

    def __post_init__(self) -> None:
        _check(self.orientation)
        if self.stored_width < 0 or self.stored_height < 0:
            raise ValueError(f"image size must not be negative, got {self.stored_width}x{self.stored_height}")
        if self.response_frame not in ("upright", "stored"):
            raise ValueError(f"response_frame must be 'upright' or 'stored', got {self.response_frame!r}")

    @classmethod
    def for_response(
        cls,
        *,
        image_format: str | None,
        stored_width: int,
        stored_height: int,
        exif_orientation: int | None,
        orientation_correction: str | None,
    ) -> BoxPlacement:
        """Decide the frame of one response from the image header and the response's OrientationCorrection.

        `image_format` is Pillow's name ("JPEG", "MPO" for many camera JPEGs, "PNG") or None when unknown
        (read like PNG); `exif_orientation` is None without a tag (values outside 1..8 count as none, as in
        `exif_transpose`); `orientation_correction` is the response's, null since August 2021, None for
        DetectText and DetectModerationLabels (they have none). Rules: Developer Guide "images-orientation".
        """
        exif = exif_orientation if exif_orientation in _STORED_TO_UPRIGHT else None
        fmt = (image_format or "").upper()
        # A JPEG with an Exif orientation is corrected by Rekognition first: boxes are upright, and any
        # OrientationCorrection is ignored (AWS returns null). That DetectText and DetectModerationLabels
        # do the same is not documented by AWS; we assume it.
        if fmt in ("JPEG", "JPG", "MPO") and exif is not None:
            return cls(stored_width, stored_height, exif, "upright")
        # Otherwise boxes are in the stored frame, turned upright by the file's own orientation (a PNG's
        # eXIf chunk: Rekognition ignores it, viewers apply it) or, when it has none, by a legacy
        # ROTATE_90/180/270 (the Developer Guide's formulas; ROTATE_0 is identity).
        if exif is None and orientation_correction is not None:
            legacy = LEGACY_CORRECTION_TO_ORIENTATION.get(orientation_correction)
            if legacy is None:
                raise ValueError(f"unknown OrientationCorrection {orientation_correction!r}")
            return cls(stored_width, stored_height, legacy, "stored")
        return cls(stored_width, stored_height, exif or 1, "stored")

    @property
    def upright_width(self) -> int:
        return upright_size(self.stored_width, self.stored_height, self.orientation)[0]

    @property
    def upright_height(self) -> int:
        return upright_size(self.stored_width, self.stored_height, self.orientation)[1]

    def upright_and_stored_box(self, box: Box) -> tuple[Box, Box]:
        """(upright, stored) normalised versions of a box given in the response's frame."""
        if self.response_frame == "upright":
            return box, upright_to_stored_box(box, self.orientation)
        return stored_to_upright_box(box, self.orientation), box

    def upright_and_stored_point(self, x: float, y: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """(upright, stored) normalised versions of a point given in the response's frame."""
        if self.response_frame == "upright":
            return (x, y), upright_to_stored_point(x, y, self.orientation)
        return stored_to_upright_point(x, y, self.orientation), (x, y)

    def box_columns(self, bounding_box: Mapping[str, float] | None) -> dict[str, float | int | None]:
        """The 12 box columns of `batch.core.tables.BOX_FIELDS` for a Rekognition `BoundingBox`.

        Upright normalised floats, upright pixels, and the box in the stored pixel array (pixels), all
        None when the box is missing or lacks one of Left/Top/Width/Height. A pixel value that is not
        finite or does not fit an int32 is None.
        """
        values = [_as_float((bounding_box or {}).get(k)) for k in ("Left", "Top", "Width", "Height")]
        if bounding_box is None or any(v is None for v in values):
            return dict.fromkeys(_BOX_COLUMNS)
        upright, stored = self.upright_and_stored_box(Box(*values))  # type: ignore[arg-type]
        uw, uh = self.upright_width, self.upright_height
        sw, sh = self.stored_width, self.stored_height
        return {
            "box_left": upright.left,
            "box_top": upright.top,
            "box_width": upright.width,
            "box_height": upright.height,
            "box_left_px": _to_px(upright.left, uw),
            "box_top_px": _to_px(upright.top, uh),
            "box_width_px": _to_px(upright.width, uw),
            "box_height_px": _to_px(upright.height, uh),
            "stored_box_left_px": _to_px(stored.left, sw),
            "stored_box_top_px": _to_px(stored.top, sh),
            "stored_box_width_px": _to_px(stored.width, sw),
            "stored_box_height_px": _to_px(stored.height, sh),
        }

    def point_columns(self, x: float | None, y: float | None) -> dict[str, float | int | None]:
        """x, y (upright normalised), x_px, y_px (upright pixels), stored_x_px, stored_y_px for a
        landmark or polygon point given in the response's frame; all None when x or y is missing."""
        fx, fy = _as_float(x), _as_float(y)
        if fx is None or fy is None:
            return dict.fromkeys(("x", "y", "x_px", "y_px", "stored_x_px", "stored_y_px"))
        (ux, uy), (sx, sy) = self.upright_and_stored_point(fx, fy)
        return {
            "x": ux,
            "y": uy,
            "x_px": _to_px(ux, self.upright_width),
            "y_px": _to_px(uy, self.upright_height),
            "stored_x_px": _to_px(sx, self.stored_width),
            "stored_y_px": _to_px(sy, self.stored_height),
        }
