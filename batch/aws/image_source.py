"""The `Image` member of a request: an S3Object reference, the object's bytes, or a converted JPEG.

`prepare_image` routes one image from its header (`batch.core.image_checks.plan_image`): a reference
when Rekognition can read the object itself, else its bytes, else an upright JPEG copy (`batch.core.convert`)
of a format Rekognition refuses. Reads are pinned to the listed ETag (`batch.aws.s3`), so bytes sent are
the listed version's; a reference names the version (`S3Object.Version`) when the header read learnt it
(a bucket that keeps versions), so Rekognition reads that version whatever happens to the key. Without
versions a reference is read by name at each call: `batch.run.image_pipeline` confirms the ETag after
the image's calls.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from batch.aws.s3 import read_object
from batch.config.model import RekognitionConfig
from batch.core.convert import UnusableImage, forbid_decompression_bombs, to_jpeg
from batch.core.image_checks import CONVERSION_ERROR, MIN_SIDE_PX, ImageRules, Refusal, Route, plan_image
from batch.core.image_header import ImageHeader
from batch.core.selection import ListedObject

logger = logging.getLogger(__name__)

__all__ = ["CONVERSIONS_PER_PROCESS", "PreparedImage", "image_route", "pixels_once", "prepare_image"]


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send: the request's `Image` member and the facts its rows need."""

    image: dict[str, Any]
    #: The image's own facts for its `images` row (read from the whole file when it was converted).
    header: ImageHeader
    #: The facts that fix the frame of Rekognition's answers (see `_answer_frame`).
    frame: ImageHeader
    #: The `images` row's `sent_*` columns.
    sent: dict[str, Any]


#: Conversions decoding at once in one worker process: each may hold hundreds of MB of pixels.
CONVERSIONS_PER_PROCESS = 2


def prepare_image(
    s3: Any,
    bucket: str,
    config: RekognitionConfig,
    obj: ListedObject,
    header: ImageHeader,
    *,
    data: bytes | None = None,
    min_side_px: int = MIN_SIDE_PX,
) -> PreparedImage | Refusal:
    """Plan from the header; read the object only to send its bytes or to convert it (`data`: the
    object's bytes when the caller has them already, e.g. a reference photo; `min_side_px`: the
    shortest side the image's analyses read)."""
    rules = _image_rules(config)
    route = image_route(config, obj, header, min_side_px)
    if isinstance(route, Refusal):
        return route
    if route is Route.S3_OBJECT:
        reference = {"Bucket": bucket, "Name": obj.key} | ({"Version": obj.version} if obj.version else {})
        return PreparedImage({"S3Object": reference}, header, header, {"sent_as": route.value})
    if data is None:
        data = read_object(s3, bucket, obj)
    if route is Route.BYTES:
        sent = {"sent_as": route.value, "sent_bytes": len(data)}
        return PreparedImage({"Bytes": data}, header, header, sent)
    return _converted(data, header, rules.max_pixels, obj.key)


def image_route(
    config: RekognitionConfig, obj: ListedObject, header: ImageHeader, min_side_px: int = MIN_SIDE_PX
) -> Route | Refusal:
    """How the run sends this image, or why not, from its listed size and header alone (what a dry
    run's `--probe` counts: a conversion may still refuse a file damaged past its header)."""
    rules = dataclasses.replace(_image_rules(config), min_side_px=min_side_px)
    return plan_image(obj.size, header, rules)


def _converted(data: bytes, header: ImageHeader, max_pixels: int | None, key: str) -> PreparedImage | Refusal:
    with _conversion_slots():
        try:
            converted = to_jpeg(data, header.format or "", max_pixels=max_pixels)
        except UnusableImage as exc:
            return exc.refusal
        except Exception as exc:
            # Not one of Pillow's failures for a bad file: a bug, but one image's, not the run's.
            logger.exception("converting %r failed", key)
            return Refusal("failed", CONVERSION_ERROR, f"{type(exc).__name__}: {exc}"[:500])
    sent = {
        "sent_as": Route.CONVERTED_JPEG.value,
        "sent_bytes": len(converted.data),
        "sent_width": converted.width,
        "sent_height": converted.height,
    }
    source = converted.source
    return PreparedImage({"Bytes": converted.data}, source, _answer_frame(source), sent)


def _answer_frame(source: ImageHeader) -> ImageHeader:
    """The facts that place the boxes of a converted image: it was sent upright and without Exif, so
    Rekognition answers in the original's upright frame, as it answers a JPEG carrying the original's
    orientation. The pixel columns stay in the original's pixels (the copy may be downscaled)."""
    return ImageHeader("JPEG", source.stored_width, source.stored_height, source.exif_orientation)


def _image_rules(config: RekognitionConfig) -> ImageRules:
    return ImageRules(
        image_source=config.image_source,
        convert_to_jpeg=config.convert_to_jpeg,
        max_convert_bytes=config.max_convert_bytes,
        max_pixels=Image.MAX_IMAGE_PIXELS,
    )


@functools.cache
def _conversion_slots() -> threading.BoundedSemaphore:
    """The process's conversion slots; the first use also makes Pillow's bomb warning an error here."""
    forbid_decompression_bombs()
    return threading.BoundedSemaphore(CONVERSIONS_PER_PROCESS)


def pixels_once(image: Mapping[str, Any], s3: Any, bucket: str, obj: ListedObject) -> Callable[[], bytes]:
    """The bytes of the image as sent, read from S3 on first use when it was sent as a reference."""
    if "Bytes" in image:
        data: bytes = image["Bytes"]
        return lambda: data
    return functools.cache(lambda: read_object(s3, bucket, obj))
