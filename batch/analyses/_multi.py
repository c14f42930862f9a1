"""What an analysis that makes several calls per image needs: its input, its outcome, and face crops.

Most analyses are one call per image (`batch.analyses.Analysis.build_request` + `flatten`). Face search
and face comparison make one call per face, so their modules define `run(image, settings, call)`
instead; the worker hands them an `ImageInput` and a `call` function (`RekognitionCaller.call`: rate
limit and retries as every call) and stores the rows of the `MultiOutcome`. The calls are passed in,
so the modules stay testable without a service.

`crop_box` and `face_crop` cut one face out of the upright image, with a margin, as a JPEG to send as
`Bytes`: SearchFacesByImage and CompareFaces use only the largest face of an image, so each face is
sent alone.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from batch.core.geometry import BoxPlacement

if TYPE_CHECKING:  # batch.aws.rekognition imports batch.config.model, which imports the analyses
    from batch.aws.rekognition import CallResult

__all__ = [
    "MIN_CROP_SIDE",
    "Call",
    "ImageInput",
    "MultiOutcome",
    "crop_box",
    "detected_faces",
    "face_crop",
    "failed_locally",
]

#: Rekognition refuses images under 80 px a side: smaller crops are scaled up to this.
MIN_CROP_SIDE = 80
#: The box columns every face row carries (`batch.core.tables.BOX_FIELDS`), copied from the searched face.
BOX_COLUMNS: tuple[str, ...] = (
    "box_left", "box_top", "box_width", "box_height",
    "box_left_px", "box_top_px", "box_width_px", "box_height_px",
    "stored_box_left_px", "stored_box_top_px", "stored_box_width_px", "stored_box_height_px",
)  # fmt: skip

#: (boto3 method, operation, request) -> the call's result, retried and rate limited.
Call = Callable[[str, str, Mapping[str, Any]], "CallResult"]


@dataclass(frozen=True)
class ImageInput:
    """One image as a multi-call analysis sees it."""

    #: The request's `Image` member ({"S3Object": ...} or {"Bytes": ...}), as the other analyses send it.
    image: Mapping[str, Any]
    #: The bytes of the image as sent (read on first use): the source of face crops.
    pixels: Callable[[], bytes]
    #: The box placement for a response with this `OrientationCorrection` (None: none).
    placement: Callable[[str | None], BoxPlacement]
    #: Rows this image's earlier analyses of the run produced, by table (with their common columns).
    earlier: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class MultiOutcome:
    """Rows by table (without the common columns), and the first call that failed (then stop)."""

    rows: dict[str, list[dict[str, Any]]]
    #: (operation, result) of the failed call; None when every call answered.
    failed: tuple[str, CallResult] | None = None
    #: After a failed call, for an analysis settled part by part (`batch.analyses.Analysis.parts`):
    #: the positions of the parts whose calls all answered, settled despite the failure.
    settled_parts: tuple[int, ...] = ()


def detected_faces(
    call: Call, image: Mapping[str, Any], placement: Callable[[str | None], BoxPlacement]
) -> tuple[list[dict[str, Any]], CallResult]:
    """One DetectFaces call (default attributes) on `image` (a request's `Image` member): the `faces`
    rows, boxes placed upright by `placement`, and the call (no rows when it failed: check `ok`)."""
    from batch.analyses import faces  # the analyses package imports this module

    detected = call("detect_faces", "DetectFaces", {"Image": dict(image), "Attributes": ["DEFAULT"]})
    if detected.response is None:
        return [], detected
    placed = placement(detected.response.get("OrientationCorrection"))
    return faces.flatten(detected.response, placed)["faces"], detected


def failed_locally(code: str, message: str) -> CallResult:
    """A failure found before calling (e.g. a face that cannot be cropped), shaped as a call's."""
    from batch.aws.rekognition import CallResult

    return CallResult(response=None, attempts=0, error_code=code, message=message[:500])


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
