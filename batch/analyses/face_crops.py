"""Faces cut out of images: SearchFacesByImage and CompareFaces use only the largest face of an image,
so face search, face comparison and the reference photos send each face alone, cut out of the upright
image with a margin (`face_crop`). `detected_faces` finds them (one DetectFaces call).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image, ImageOps

from batch.analyses import faces
from batch.core.calls import Call, CallResult
from batch.core.geometry import BoxPlacement

__all__ = ["BOX_COLUMNS", "MIN_CROP_SIDE", "crop_box", "detected_faces", "face_crop"]

#: Rekognition refuses images under 80 px a side: smaller crops are scaled up to this.
MIN_CROP_SIDE = 80
#: The box columns every face row carries (`batch.core.tables.BOX_FIELDS`), copied from the searched face.
BOX_COLUMNS: tuple[str, ...] = (
    "box_left", "box_top", "box_width", "box_height",
    "box_left_px", "box_top_px", "box_width_px", "box_height_px",
    "stored_box_left_px", "stored_box_top_px", "stored_box_width_px", "stored_box_height_px",
)  # fmt: skip

def detected_faces(
    call: Call, image: Mapping[str, Any], placement: Callable[[str | None], BoxPlacement]
) -> tuple[list[dict[str, Any]], CallResult]:
    """One DetectFaces call (default attributes) on `image` (a request's `Image` member): the `faces`
    rows, boxes placed upright by `placement`, and the call (no rows when it failed: check `ok`)."""
    detected = call("detect_faces", "DetectFaces", {"Image": dict(image), "Attributes": ["DEFAULT"]})
    if detected.response is None:
        return [], detected
    placed = placement(detected.response.get("OrientationCorrection"))
    return faces.flatten(detected.response, placed)["faces"], detected


def crop_box(box: Mapping[str, float], width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """The pixel rectangle (left, top, right, bottom) to cut around a face.

    `box` is the face's upright normalised box (`box_left`, `box_top`, `box_width`, `box_height`);
    `margin` adds that fraction of the face's width (height) on the left and right (top and bottom).
    Clipped to the image; never empty (a face at an edge keeps at least one pixel).
    """
    left = box["box_left"] - margin * box["box_width"]
    top = box["box_top"] - margin * box["box_height"]
    right = box["box_left"] + (1 + margin) * box["box_width"]
    bottom = box["box_top"] + (1 + margin) * box["box_height"]
    x0 = min(max(0, math.floor(left * width)), width - 1)
    y0 = min(max(0, math.floor(top * height)), height - 1)
    x1 = max(min(width, math.ceil(right * width)), x0 + 1)
    y1 = max(min(height, math.ceil(bottom * height)), y0 + 1)
    return x0, y0, x1, y1


def face_crop(data: bytes, box: Mapping[str, float], margin: float, max_side: int | None = None) -> bytes:
    """A JPEG of one face cut from the upright image (Exif orientation applied first), scaled up to
    `MIN_CROP_SIDE` when smaller, and down to `max_side` on its longer side when given and larger."""
    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened).convert("RGB")
    face = upright.crop(crop_box(box, upright.width, upright.height, margin))
    scale = 1.0
    if min(face.size) < MIN_CROP_SIDE:
        scale = MIN_CROP_SIDE / min(face.size)
    elif max_side is not None and max(face.size) > max_side:
        scale = max(max_side / max(face.size), MIN_CROP_SIDE / min(face.size))
    if scale != 1.0:
        face = face.resize(
            (math.ceil(face.width * scale), math.ceil(face.height * scale)), Image.Resampling.LANCZOS
        )
    out = io.BytesIO()
    face.save(out, "JPEG", quality=95)
    return out.getvalue()
