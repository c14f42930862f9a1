"""Face comparison: every face of the image compared with each reference face -> tables
`face_comparisons` and `face_comparison_misses`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, CompareFaces,
CompareFacesMatch, ComparedFace, ComparedSourceImageFace) and the Developer Guide, "Comparing faces in
images" (https://docs.aws.amazon.com/rekognition/latest/dg/faces-comparefaces.html).

CompareFaces compares the *largest* face of `SourceImage` with each of the 100 largest faces of
`TargetImage`. So a reference photo is not sent whole: the driver resolves the references once per run
(`batch.faces.references`: list a prefix, HEAD a key for its ETag, DetectFaces, then every face cut out
upright with a margin by `face_crop`), and the crops travel to the workers in the settings
(`Settings.resolved`). Each image then costs one CompareFaces per reference face, the crop as
`SourceImage.Bytes` and the image as `TargetImage`, sent as the other analyses send it.

An image without a face is not an error of the image: CompareFaces answers InvalidParameterException
("no faces in the target image") for each reference face, which is recorded as zero comparisons (see
`run` for a reference face at fault). When `faces` ran first for the image and found none, no
CompareFaces call is made at all (`AFTER`).

* `face_comparisons`: one row per (reference face, image face) with similarity >= the threshold.
* `face_comparison_misses`: one row per (reference face, image) compared: how many image faces were
  compared and how many stayed below the threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import member, number, parse_settings, strings
from batch.analyses.base import Analysis, DriverHooks, DriverSetup, ImageInput, MultiOutcome
from batch.analyses.index_faces import check_quality_filter
from batch.core.calls import Call, CallResult
from batch.core.errors import ConfigError
from batch.core.geometry import BoxPlacement
from batch.core.retry import IMAGE_ERRORS
from batch.core.tables import BOX_FIELDS, table_schema
from batch.faces.references import (
    REFERENCE_SUMMARY_FIELDS,
    ReferenceFace,
    ReferenceHooks,
    References,
    reference_location,
)

NAME = "compare_faces"
OPERATION = "CompareFaces"
CLIENT_METHOD = "compare_faces"
#: CompareFaces has no `OrientationCorrection`; `run` reads `TARGET_ORIENTATION_FIELD` itself.
ORIENTATION_FIELD = None
TARGET_ORIENTATION_FIELD = "TargetImageOrientationCorrection"
#: When `faces` runs for the same image, it runs first: an image it finds no face in is not compared.
AFTER = ("faces",)
#: What CompareFaces answers when the source or the target image holds no face.
NO_FACE_CODE = "InvalidParameterException"


def _references(key: str, value: Any) -> tuple[str, ...]:
    urls: tuple[str, ...] = strings()(key, value)
    for url in urls:
        reference_location(url, key)
    return urls


def _not_a_setting(key: str, value: Any) -> Any:
    raise ConfigError(f"{key}: set by the job from `references`, not a config key")


@dataclass(frozen=True)
class Settings:
    """`[analyses.compare_faces]` in the config (`--reference` sets `references`).

    `references` are `s3://bucket/key` URLs of reference photos, or prefixes ending in `/` (every image
    under it); `similarity_threshold` is sent as `SimilarityThreshold` (matches below it are counted in
    `face_comparison_misses`, not returned), `quality_filter` as `QualityFilter`; `crop_margin` is the
    fraction of a reference face's width and height added around it when it is cut out.
    """

    references: tuple[str, ...] = ()
    similarity_threshold: float = 80.0
    quality_filter: str = "NONE"
    crop_margin: float = 0.25
    #: The references as the driver resolved them; None until then (never read from the config).
    resolved: References | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.compare_faces") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        return parse_settings(
            cls,
            mapping,
            where,
            {
                "references": _references,
                "similarity_threshold": number(0, 100),
                "quality_filter": check_quality_filter,
                "crop_margin": number(0, 1),
                "resolved": _not_a_setting,
            },
        )

    @property
    def faces(self) -> tuple[ReferenceFace, ...]:
        """The reference faces to compare each image with; the driver must have resolved them."""
        if self.resolved is None:
            raise ValueError("compare_faces: the references were not resolved (batch.faces.references)")
        return self.resolved.faces


def settings_document(settings: Settings) -> dict[str, Any]:
    """What `batch.analyses.settings_digest` hashes (the manifest's and the config's digest): the request
    options and, once resolved, each reference image's bucket, key and ETag (its faces follow from
    them). The URLs themselves count only until resolved: the same images under another URL give the
    same digest. Images are settled per reference photo (`settings_parts`), not by this digest."""
    document: dict[str, Any] = {
        "similarity_threshold": settings.similarity_threshold,
        "quality_filter": settings.quality_filter,
        "crop_margin": settings.crop_margin,
    }
    if settings.resolved is None:
        document["references"] = sorted(settings.references)
    else:
        document["reference_images"] = sorted([i.bucket, i.key, i.etag] for i in settings.resolved.images)
    return document


def settings_parts(settings: Settings) -> list[dict[str, Any]] | None:
    """One part per resolved reference photo: the request options and that photo's bucket, key and
    ETag. An image is settled for each photo it was compared with (`batch.analyses.settled_digests`):
    a new reference photo costs one comparison per image, and the others are not paid again."""
    if settings.resolved is None:
        return None
    options = {k: v for k, v in settings_document(settings).items() if k != "reference_images"}
    return [{**options, "reference_image": [i.bucket, i.key, i.etag]} for i in settings.resolved.images]


def with_parts(settings: Settings, indices: tuple[int, ...]) -> Settings:
    """`settings` with only the reference photos at `indices` (of `settings_parts`) and their faces."""
    if settings.resolved is None:
        raise ValueError("compare_faces: the references were not resolved (batch.faces.references)")
    images = tuple(settings.resolved.images[i] for i in indices)
    faces = tuple(f for f in settings.resolved.faces if f.image in images)
    return dataclasses.replace(settings, resolved=References(images, faces))


def planned_calls(settings: Settings) -> int:
    """CompareFaces calls per image at least, for the dry run: one per reference image (each holds at
    least one face; a dry run does not detect them)."""
    return len(settings.resolved.images) if settings.resolved is not None else len(settings.references)


def compare_request(face: ReferenceFace, target: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.compare_faces`: the reference face's crop with `target`."""
    return {
        "SourceImage": {"Bytes": face.crop},
        "TargetImage": dict(target),
        "SimilarityThreshold": settings.similarity_threshold,
        "QualityFilter": settings.quality_filter,
    }


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The request comparing `image` with the first reference face (the registry's one-call view;
    `run` makes one request per reference face with `compare_request`)."""
    return compare_request(settings.faces[0], image, settings)


_REFERENCE_FIELDS = [
    pa.field("reference_bucket", pa.string()),
    pa.field("reference_key", pa.string()),
    pa.field("reference_etag", pa.string()),
    pa.field("reference_face_index", pa.int32()),
]

TABLES: Mapping[str, pa.Schema] = {
    "face_comparisons": table_schema(
        [
            *_REFERENCE_FIELDS,
            pa.field("reference_box_left", pa.float64()),
            pa.field("reference_box_top", pa.float64()),
            pa.field("reference_box_width", pa.float64()),
            pa.field("reference_box_height", pa.float64()),
            pa.field("similarity", pa.float64()),
            pa.field("face_confidence", pa.float64()),
            *BOX_FIELDS,
        ]
    ),
    "face_comparison_misses": table_schema(
        [
            *_REFERENCE_FIELDS,
            pa.field("faces_compared", pa.int32()),
            pa.field("faces_unmatched", pa.int32()),
        ]
    ),
}


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows per table of one CompareFaces response, without the reference's columns (`run` adds
    them): each match with the image face's upright box, and the counts."""
    matches = response.get("FaceMatches") or []
    unmatched = len(response.get("UnmatchedFaces") or [])
    return {
        "face_comparisons": [
            {
                "similarity": match.get("Similarity"),
                "face_confidence": member(match, "Face", "Confidence"),
                **placement.box_columns(member(match, "Face", "BoundingBox")),
            }
            for match in matches
        ],
        "face_comparison_misses": [
            {"faces_compared": len(matches) + unmatched, "faces_unmatched": unmatched}
        ],
    }


def reference_columns(face: ReferenceFace, table: str) -> dict[str, Any]:
    """The reference face's columns of a row of `table`."""
    columns: dict[str, Any] = {
        "reference_bucket": face.image.bucket,
        "reference_key": face.image.key,
        "reference_etag": face.image.etag,
        "reference_face_index": face.face_index,
    }
    if table == "face_comparisons":
        left, top, width, height = face.box
        columns.update(
            reference_box_left=left,
            reference_box_top=top,
            reference_box_width=width,
            reference_box_height=height,
        )
    return columns


def may_mean_no_face(compared: CallResult) -> bool:
    """Whether a failed CompareFaces may only say that the image has no face.

    Rekognition answers InvalidParameterException when the source or the target holds no face
    ("Request has invalid parameters" in the wild, naming neither). A message that names the source
    (e.g. a `quality_filter` that filters the reference face out) blames the reference face.
    """
    return compared.error_code == NO_FACE_CODE and "source" not in (compared.message or "").lower()


#: CompareFaces errors about the target image: InvalidParameterException may be a reference face's.
TARGET_IMAGE_ERRORS = IMAGE_ERRORS - {"InvalidParameterException"}


def run(image: ImageInput, settings: Settings, call: Call) -> MultiOutcome:
    """Compare the image with each reference face (see the module docstring).

    A failed call stops the comparisons, keeping the rows so far, except one that may only mean "no face
    in the image" (`may_mean_no_face`): the image is compared with the other reference faces. If every
    comparison said so and nothing showed the image has faces, it has none: zero comparisons, no error.
    Otherwise the reference face is at fault (a crop CompareFaces finds no face in), and that is the
    analysis's error, never the image's: the image is not rejected. An image without a face so costs
    one unbilled call per reference face; with `faces` in the run, none.
    """
    outcome = MultiOutcome({table: [] for table in TABLES})
    if "faces" in image.earlier and not image.earlier["faces"]:
        return outcome  # DetectFaces found no face: CompareFaces would only say so
    said_no_face: list[CallResult] = []
    unanswered: list[ReferenceFace] = []
    for position, face in enumerate(settings.faces):
        compared = call(CLIENT_METHOD, OPERATION, compare_request(face, image.image, settings))
        if compared.response is None:
            unanswered.append(face)
            if not may_mean_no_face(compared):
                outcome.failed = (OPERATION, compared)
                # The references are our own JPEG crops: an image error other than InvalidParameter
                # is the target's, the image's own (rejected, not paid again).
                outcome.image_call = compared.error_code in TARGET_IMAGE_ERRORS
                # The photos all of whose faces were compared stay settled: not paid again.
                outcome.settled_parts = _complete_photos(settings, [*unanswered, *settings.faces[position:]])
                return outcome
            said_no_face.append(compared)
            continue
        placement = image.placement(compared.response.get(TARGET_ORIENTATION_FIELD))
        for table, rows in flatten(compared.response, placement).items():
            outcome.rows[table] += [{**reference_columns(face, table), **row} for row in rows]
    has_faces = bool(outcome.rows["face_comparison_misses"] or image.earlier.get("faces"))
    if said_no_face and has_faces:
        outcome.failed = (OPERATION, said_no_face[0])
        outcome.settled_parts = _complete_photos(settings, unanswered)
    return outcome


def _complete_photos(settings: Settings, unanswered: list[ReferenceFace]) -> tuple[int, ...]:
    """Positions of the reference photos each of whose faces was compared (none in `unanswered`)."""
    photos = settings.resolved.images if settings.resolved is not None else ()
    failed = {face.image for face in unanswered}
    return tuple(i for i, photo in enumerate(photos) if photo not in failed)


@dataclass(frozen=True)
class CompareFaces(Analysis):
    """One CompareFaces per reference face; the references resolved by the driver (`ReferenceHooks`),
    and images settled per reference photo (`parts`)."""

    def run(self, image: ImageInput, settings: Any, call: Call) -> MultiOutcome:
        return run(image, settings, call)

    def settings_document(self, settings: Any) -> dict[str, Any]:
        return settings_document(settings)

    def parts(self, settings: Any) -> list[dict[str, Any]] | None:
        return settings_parts(settings)

    def only_parts(self, settings: Any, indices: tuple[int, ...]) -> Any:
        return with_parts(settings, indices)

    def planned_calls(self, settings: Any) -> int:
        return planned_calls(settings)

    def check(self, settings: Any) -> None:
        if not settings.references:
            raise ConfigError(
                "analyses.compare_faces.references: required by compare_faces (--reference s3://BUCKET/KEY)"
            )

    def summary_fields(self) -> dict[str, Any]:
        return dict(REFERENCE_SUMMARY_FIELDS)

    def driver(self, setup: DriverSetup) -> DriverHooks:
        return ReferenceHooks(setup)


ANALYSIS = CompareFaces(
    name=NAME,
    operation=OPERATION,
    client_method=CLIENT_METHOD,
    settings_type=Settings,
    tables=TABLES,
    build_request=build_request,
    flatten=flatten,
    orientation_field=ORIENTATION_FIELD,
    after=AFTER,
    # An InvalidParameterException may be about a reference face, not the image.
    rejects_image=False,
    calls_at_least=True,
)
