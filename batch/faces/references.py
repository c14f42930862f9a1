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
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.base import DriverHooks, DriverReport, DriverSetup
from batch.analyses.face_crops import detected_faces, face_crop
from batch.aws.image_source import prepare_image
from batch.aws.rekognition import RekognitionCaller, driver_caller
from batch.aws.s3 import head, list_pages, read_object
from batch.config.model import InputConfig, RekognitionConfig, parse_s3_url
from batch.core.calls import CallCounts
from batch.core.errors import ConfigError, InputUnreachable
from batch.core.image_checks import Refusal
from batch.core.image_header import probe
from batch.core.retry import IMAGE_ERRORS, error_code
from batch.core.selection import ListedObject, is_selected

NAME = "compare_faces"
WHERE = f"analyses.{NAME}.references"

#: The longer side of a reference face's crop, at most, in pixels: far more detail than comparing
#: needs (Rekognition finds faces of 40 px in a 1920x1080 image), and small enough that the crops
#: travel with every Dask task without weighing on it.
MAX_CROP_SIDE = 1024


@dataclass(frozen=True)
class ReferenceImage:
    """One reference photo as the driver found it: the object version its faces come from."""

    bucket: str
    key: str
    etag: str


@dataclass(frozen=True)
class ReferenceFace:
    """One face of a reference photo, cut out to be sent as CompareFaces' `SourceImage`."""

    image: ReferenceImage
    #: The face's position in DetectFaces' answer for the reference, from 0.
    face_index: int
    #: The face's box in the upright reference photo, normalised: (left, top, width, height).
    box: tuple[float, float, float, float]
    #: The face cut out of the upright photo with `crop_margin` around it, as a JPEG.
    crop: bytes = field(repr=False)


@dataclass(frozen=True)
class References:
    """The references of a run, resolved by the driver (`batch.faces.references`)."""

    images: tuple[ReferenceImage, ...]
    #: Every face of every image; empty in a dry run (which detects nothing).
    faces: tuple[ReferenceFace, ...] = ()


def faces_of(
    image: ReferenceImage, detected: list[dict[str, Any]], data: bytes, margin: float
) -> tuple[ReferenceFace, ...]:
    """The reference faces of one photo: each face DetectFaces found (its `faces` rows, with upright
    boxes) cut out of the photo's bytes with `margin` around it."""
    return tuple(
        ReferenceFace(
            image,
            row["face_index"],
            (row["box_left"], row["box_top"], row["box_width"], row["box_height"]),
            face_crop(data, row, margin, MAX_CROP_SIDE),
        )
        for row in detected
        if row.get("box_left") is not None  # a face without a box cannot be cut out (never seen)
    )


def reference_location(url: str, where: str = "analyses.compare_faces.references") -> tuple[str, str, bool]:
    """(bucket, key or prefix, is a prefix) of a reference URL: `s3://bucket/key.jpg` is one image,
    `s3://bucket/prefix/` (ending in `/`) every image under the prefix. ConfigError naming `where`."""
    bucket, key = parse_s3_url(url, where)
    prefix = url.endswith("/")
    if not key and not prefix:
        raise ConfigError(f"{where}: {url!r} names no image: give s3://BUCKET/KEY or a prefix ending in '/'")
    return bucket, key, prefix


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
    settings: Any,
    s3: Any,
    caller: RekognitionCaller | None,
    config: RekognitionConfig,
    cache: FaceCache | None = None,
) -> Any:
    """compare_faces' `settings` with the references resolved: the photos, and with `caller` their
    faces (from `cache` when an earlier run cut them out)."""
    photos = find_photos(s3, settings.references)
    found: tuple[ReferenceFace, ...] = ()
    if caller is not None:
        for bucket, obj in photos:
            image = ReferenceImage(bucket, obj.key, obj.etag)
            cut = cache.get(image, settings.crop_margin) if cache is not None else None
            if cut is None:
                cut = detect_faces(s3, caller, bucket, obj, config=config, margin=settings.crop_margin)
                if cache is not None:
                    cache.put(image, settings.crop_margin, cut)
            found += cut
    images = tuple(ReferenceImage(bucket, obj.key, obj.etag) for bucket, obj in photos)
    return dataclasses.replace(settings, resolved=References(images, found))


#: The JSON summary's reference fields (`ReferenceHooks.report` fills them), with their defaults.
REFERENCE_SUMMARY_FIELDS: dict[str, Any] = {"reference_photos": 0, "reference_faces": 0}


class ReferenceHooks(DriverHooks):
    """compare_faces in the driver: resolve the references before the attempt (the settings digest
    names their ETags). DetectFaces runs at the `faces` quota and is priced as compare_faces; a dry
    run detects nothing and counts a DetectFaces per photo no earlier run cut out."""

    def __init__(self, setup: DriverSetup) -> None:
        self._setup = setup
        self._report = DriverReport(fields=dict(REFERENCE_SUMMARY_FIELDS))

    def prepare(self, settings: Any) -> Any:
        setup = self._setup
        counts = CallCounts()
        cache = FaceCache(setup.store) if setup.store is not None else None
        caller = None if setup.dry_run else driver_caller(setup.config, "faces", counts, setup.quotas)
        resolved = resolve(settings, setup.s3, caller, setup.config.rekognition, cache)
        photos, faces = resolved.resolved.images, resolved.resolved.faces
        if setup.dry_run:
            uncut = [i for i in photos if cache is None or cache.get(i, settings.crop_margin) is None]
            counts.attempts[("DetectFaces", "planned")] = len(uncut)
        billed = sum(n for (_, outcome), n in counts.attempts.items() if outcome in ("ok", "planned"))
        self._report = DriverReport(
            calls=+counts.attempts,
            image_cost_usd=billed * setup.config.prices[NAME],
            fields={"reference_photos": len(photos), "reference_faces": len(faces)},
            lines=[
                f"  {len(photos)} reference photos: one CompareFaces per image and face in them "
                "(a dry run does not detect their faces)"
                if setup.dry_run
                else f"  references: {len(faces)} faces in {len(photos)} photos"
            ],
        )
        return resolved

    def report(self) -> DriverReport:
        return self._report


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
    """Every face of one reference photo, cut out: the photo read once, pinned to its ETag, and one
    DetectFaces call on those very bytes (`batch.aws.image_source.prepare_image` in bytes mode: a WebP
    is converted, a file Rekognition would refuse is refused before any call), so the boxes and the
    crops are of the version the rows name even if the key is overwritten meanwhile."""

    where = f"{WHERE}: s3://{bucket}/{obj.key}"
    prepared = prepared_reference(s3, bucket, obj, config, where)
    data = prepared.data
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


@dataclass(frozen=True)
class PreparedReference:
    """A reference photo read once and made ready to send: its bytes and the request's `Image`."""

    data: bytes = field(repr=False)
    image: dict[str, Any]
    frame: Any


def prepared_reference(
    s3: Any, bucket: str, obj: ListedObject, config: RekognitionConfig, where: str
) -> PreparedReference:
    """The photo read once, pinned to its ETag, as `Image.Bytes` (`prepare_image` in bytes mode: a WebP
    is converted, a file Rekognition would refuse is refused before any call): ConfigError naming
    `where` for a photo that is too large or unusable, InputUnreachable when it cannot be read."""
    if obj.size > config.max_convert_bytes:
        raise ConfigError(f"{where}: {obj.size} bytes, over rekognition.max_convert_bytes")
    try:
        data = read_object(s3, bucket, obj)
        as_bytes = dataclasses.replace(config, image_source="bytes")
        prepared = prepare_image(s3, bucket, as_bytes, obj, probe(data, complete=True), data=data)
    except (ClientError, BotoCoreError) as exc:
        raise InputUnreachable(f"{where}: cannot read it: {error_code(exc)}") from None
    if isinstance(prepared, Refusal):
        raise ConfigError(f"{where}: not usable as a reference: {prepared.code}: {prepared.reason}")
    return PreparedReference(data, dict(prepared.image), prepared.frame)
