"""The reference faces of `compare_faces`, resolved once per run by the driver, before the batches.

CompareFaces compares only the largest face of its source image, so each face of each reference photo
is sent alone (`batch.analyses.compare_faces`). Here, once per run:

1. the photos: a key is looked up (HeadObject: its ETag), a prefix (ending in `/`) is listed for its
   images (the input's name rule, `batch.core.selection.is_selected`); duplicates count once;
2. with a caller (not in a dry run), their faces: one DetectFaces per photo, rate limited and retried
   as every call, and each face cut out of the upright photo (`compare_faces.faces_of`). With an output
   (`FaceCache`), the faces of a photo version are kept under `_references/` and read back by later
   runs: DetectFaces is paid once per reference photo version, not once per night.

The result goes into the compare_faces settings (`Settings.resolved`), so the crops travel to the
workers with the run's settings, and the settings digest names the photos' ETags.

Errors end the run before it starts, with one line: a missing reference, a prefix without images,
a photo without a face or one Rekognition refuses is a config error (exit 2); S3 or Rekognition
unreachable or denying access is InputUnreachable (exit 3).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses._multi import detected_faces
from batch.analyses.compare_faces import (
    MAX_CROP_SIDE,
    ReferenceFace,
    ReferenceImage,
    References,
    faces_of,
    reference_location,
)
from batch.config.model import InputConfig, RekognitionConfig, RunConfig
from batch.core.errors import ConfigError, InputUnreachable
from batch.core.image_checks import Refusal
from batch.core.image_header import probe
from batch.aws.rekognition import RekognitionCaller
from batch.core.retry import IMAGE_ERRORS, error_code
from batch.aws.s3 import head, list_pages, read_object
from batch.core.selection import ListedObject, is_selected

WHERE = "analyses.compare_faces.references"


#: Under the output: the faces cut out of each reference photo version (`FaceCache`).
FACES_DIR = "_references"


class FaceCache:
    """The reference faces earlier runs cut out, kept under the output (`_references/<digest>.json`),
    one file per photo version (bucket, key, ETag) and crop settings, written once (create-only).

    `store` is the output's `batch.storage.commits.RunStore`. `rekbatch gc` leaves the folder alone.
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    def get(self, image: ReferenceImage, margin: float) -> tuple[ReferenceFace, ...] | None:
        body = self._store.read(self.path(image, margin))
        return None if body is None else faces_from_json(image, body)

    def put(self, image: ReferenceImage, margin: float, found: tuple[ReferenceFace, ...]) -> None:
        self._store.destination.create(self.path(image, margin), faces_to_json(found), self._store.s3_client)

    @staticmethod
    def path(image: ReferenceImage, margin: float) -> str:
        document = json.dumps([image.bucket, image.key, image.etag, margin, MAX_CROP_SIDE])
        return f"{FACES_DIR}/{hashlib.sha256(document.encode()).hexdigest()}.json"


def faces_to_json(found: tuple[ReferenceFace, ...]) -> bytes:
    faces_json = [
        {"face_index": f.face_index, "box": list(f.box), "crop": base64.b64encode(f.crop).decode("ascii")}
        for f in found
    ]
    return json.dumps({"faces": faces_json}).encode()


def faces_from_json(image: ReferenceImage, body: bytes) -> tuple[ReferenceFace, ...]:
    return tuple(
        ReferenceFace(image, f["face_index"], tuple(f["box"]), base64.b64decode(f["crop"]))
        for f in json.loads(body)["faces"]
    )


def resolve(
    config: RunConfig, s3: Any, caller: RekognitionCaller | None, cache: FaceCache | None = None
) -> RunConfig:
    """`config` with compare_faces' references resolved (the photos, and with `caller` their faces:
    from `cache` when an earlier run cut them out); `config` itself when the run does not compare faces."""
    if "compare_faces" not in config.analyses:
        return config
    settings = config.analysis_settings["compare_faces"]
    photos = find_photos(s3, settings.references)
    found: tuple[ReferenceFace, ...] = ()
    if caller is not None:
        for bucket, obj in photos:
            image = ReferenceImage(bucket, obj.key, obj.etag)
            cut = cache.get(image, settings.crop_margin) if cache is not None else None
            if cut is None:
                cut = detect_faces(
                    s3, caller, bucket, obj, config=config.rekognition, margin=settings.crop_margin
                )
                if cache is not None:
                    cache.put(image, settings.crop_margin, cut)
            found += cut
    images = tuple(ReferenceImage(bucket, obj.key, obj.etag) for bucket, obj in photos)
    resolved = dataclasses.replace(settings, resolved=References(images, found))
    return dataclasses.replace(
        config, analysis_settings={**config.analysis_settings, "compare_faces": resolved}
    )


def find_photos(s3: Any, urls: Sequence[str]) -> list[tuple[str, ListedObject]]:
    """(bucket, object) of every reference photo the URLs name, in order, each once."""
    found: dict[tuple[str, str], ListedObject] = {}
    for url in urls:
        bucket, key, is_prefix = reference_location(url)
        try:
            objects = list(_images_under(s3, bucket, key)) if is_prefix else _one(s3, bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise InputUnreachable(f"{WHERE}: cannot read {url}: {error_code(exc)}") from None
        if not objects:
            raise ConfigError(f"{WHERE}: {url}: " + ("no images under it" if is_prefix else "no such key"))
        for obj in objects:
            found.setdefault((bucket, obj.key), obj)
    return [(bucket, obj) for (bucket, _), obj in found.items()]


def _images_under(s3: Any, bucket: str, prefix: str) -> Iterator[ListedObject]:
    for page in list_pages(s3, bucket, prefix):
        yield from (obj for obj in page if is_selected(obj, prefix, InputConfig()))


def _one(s3: Any, bucket: str, key: str) -> list[ListedObject]:
    obj = head(s3, bucket, key)
    return [obj] if obj is not None else []


def detect_faces(
    s3: Any,
    caller: RekognitionCaller,
    bucket: str,
    obj: ListedObject,
    *,
    config: RekognitionConfig,
    margin: float,
) -> tuple[ReferenceFace, ...]:
    """Every face of one reference photo, cut out: one DetectFaces call (the photo sent as an image of
    the input would be: `batch.run.worker.prepare_image`, so a WebP is converted and a file Rekognition
    would refuse is refused before any call) and the photo read once, pinned to its ETag."""
    from batch.run.worker import prepare_image  # the worker module imports Dask: only when references run

    where = f"{WHERE}: s3://{bucket}/{obj.key}"
    if obj.size > config.max_convert_bytes:
        raise ConfigError(f"{where}: {obj.size} bytes, over rekognition.max_convert_bytes")
    try:
        data = read_object(s3, bucket, obj)
        prepared = prepare_image(s3, bucket, config, obj, probe(data, complete=True), data=data)
    except (ClientError, BotoCoreError) as exc:
        raise InputUnreachable(f"{where}: cannot read it: {error_code(exc)}") from None
    if isinstance(prepared, Refusal):
        raise ConfigError(f"{where}: not usable as a reference: {prepared.code}: {prepared.reason}")
    rows, detected = detected_faces(caller.call, prepared.image, prepared.frame.box_placement)
    if detected.response is None:
        reason = f"{where}: DetectFaces: {detected.error_code}: {detected.message}"
        raise (ConfigError if detected.error_code in IMAGE_ERRORS else InputUnreachable)(reason)
    try:
        found = faces_of(ReferenceImage(bucket, obj.key, obj.etag), rows, data, margin)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot cut its faces out: {exc}") from None
    if not found:
        raise ConfigError(f"{where}: no face found in it")
    return found
