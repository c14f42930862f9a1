"""Face search: every face of the image searched in a collection -> table `face_matches`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`, SearchFaces,
SearchFacesByImage, FaceMatch, Face) and the Developer Guide, "Searching faces in a collection"
(https://docs.aws.amazon.com/rekognition/latest/dg/collections.html).

SearchFacesByImage searches with the largest face of the image only, so a group photo searched as a
whole finds one person. This analysis searches every face:

* a face IndexFaces stored for this image earlier in the same run (the `indexed_faces` rows of the
  image, same collection) is searched by its FaceId (`SearchFaces`): no image is sent again;
* every other face (the image is not indexed in this run, or IndexFaces left the face out) is cut
  from the upright image with a margin (`batch.analyses.face_crops.face_crop`) and searched alone with
  `SearchFacesByImage`. The faces come from this run's `faces` rows when that analysis ran first,
  else from one `DetectFaces` call.

So the analysis runs after `index_faces` and `faces` for the same image (`AFTER`).

`face_matches`: one row per (searched face, matched face). The searched face's box is upright, as in
the other tables; the matched face's box (`matched_box_*`) is normalised, as the collection stores it
(its upright pixels are in `indexed_faces`, same `face_id`). `matched_key` is the key the matched face
was indexed from, decoded from its ExternalImageId; null for the digest form of long keys (join
`indexed_faces` on `face_id`).

A collection shared with `user_search` also holds its users' reference faces: they are left out of the
matches, and each search asks for as many more as the collection holds (`reference_faces`, counted by
the driver: `batch.faces.reference_count`), so they take none of `max_matches`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import integer, member, number, parse_settings
from batch.analyses.base import Analysis, DriverHooks, DriverSetup, ImageInput, MultiOutcome
from batch.analyses.face_crops import BOX_COLUMNS, detected_faces, face_crop
from batch.analyses.index_faces import check_collection_id
from batch.core.calls import Call, failed_locally
from batch.core.errors import ConfigError
from batch.core.external_ids import REFERENCE_PREFIX, key_of
from batch.core.geometry import BoxPlacement
from batch.core.tables import BOX_FIELDS, table_schema
from batch.faces.reference_count import ReferenceCount

NAME = "face_search"
#: The operation of most calls (the one the dry run counts once per image).
OPERATION = "SearchFacesByImage"
CLIENT_METHOD = "search_faces_by_image"
ORIENTATION_FIELD = None
#: Every operation this analysis may call: each is rate limited and priced as this analysis.
OPERATIONS = ("SearchFacesByImage", "SearchFaces", "DetectFaces")
#: Analyses whose rows this one reads when they run for the same image: they run first.
#: user_search: its sync of the reference faces comes before they are counted (`ReferenceCount`).
AFTER = ("index_faces", "faces", "user_search")
#: `MaxFaces` of the search requests: 1..4096 (botocore model).
MAX_MATCHES = 4096


@dataclass(frozen=True)
class Settings:
    """`[analyses.face_search]` in the config (`--collection` sets `collection`).

    `face_match_threshold` is sent as `FaceMatchThreshold` (matches below it are not returned),
    `max_matches` as `MaxFaces` (matches per searched face, highest similarity first); `crop_margin`
    is the fraction of a face's width and height added around it when it is cut out.
    """

    collection: str = ""
    face_match_threshold: float = 80.0
    max_matches: int = 100
    crop_margin: float = 0.25
    #: user_search's reference faces in the collection, counted by the driver (never read from the
    #: config): the searches ask for `max_matches` more than that, and leave them out.
    reference_faces: int = 0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.face_search") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        return parse_settings(
            cls,
            mapping,
            where,
            {
                "collection": check_collection_id,
                "face_match_threshold": number(0, 100),
                "max_matches": integer(1, MAX_MATCHES),
                "crop_margin": number(0, 1),
                "reference_faces": _not_a_setting,
            },
        )


def _not_a_setting(key: str, value: Any) -> Any:
    raise ConfigError(f"{key}: counted by the job in the collection, not a config key")


def settings_document(settings: Settings) -> dict[str, Any]:
    """What the settings digest hashes: the options, not the count of reference faces (the matches
    kept are the same whatever it is)."""
    document = dataclasses.asdict(settings)
    del document["reference_faces"]
    return document


def max_faces(settings: Settings) -> int:
    """`MaxFaces` of the search requests: `max_matches` and room for every reference face."""
    return min(MAX_MATCHES, settings.max_matches + settings.reference_faces)


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.search_faces_by_image` with `image` (a face crop's `Bytes`)."""
    return {
        "CollectionId": settings.collection,
        "Image": dict(image),
        "FaceMatchThreshold": settings.face_match_threshold,
        "MaxFaces": max_faces(settings),
    }


def search_by_id_request(face_id: str, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.search_faces` (a face already in the collection)."""
    return {
        "CollectionId": settings.collection,
        "FaceId": face_id,
        "FaceMatchThreshold": settings.face_match_threshold,
        "MaxFaces": max_faces(settings),
    }


#: The searched face's columns of a match row (`searched_face`): face_search's and user_search's.
SEARCHED_FACE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("searched_by", pa.string()),
    pa.field("face_index", pa.int32()),
    pa.field("searched_face_id", pa.string()),
    *BOX_FIELDS,
)

TABLES: Mapping[str, pa.Schema] = {
    "face_matches": table_schema(
        [
            pa.field("collection_id", pa.string()),
            *SEARCHED_FACE_FIELDS,
            pa.field("similarity", pa.float64()),
            pa.field("face_id", pa.string()),
            pa.field("matched_box_left", pa.float64()),
            pa.field("matched_box_top", pa.float64()),
            pa.field("matched_box_width", pa.float64()),
            pa.field("matched_box_height", pa.float64()),
            pa.field("external_image_id", pa.string()),
            pa.field("matched_key", pa.string()),
        ]
    ),
}


def match_rows(searched: Mapping[str, Any], response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per match of a search response but user_search's reference faces, in its order (highest
    similarity first); `searched` holds the searched face's columns (`searched_by`, `face_index`,
    `searched_face_id` and the box columns)."""
    rows = []
    for match in response.get("FaceMatches") or []:
        external = member(match, "Face", "ExternalImageId")
        if external and external.startswith(REFERENCE_PREFIX):
            continue
        rows.append(
            {
                **searched,
                "similarity": match.get("Similarity"),
                "face_id": member(match, "Face", "FaceId"),
                "matched_box_left": member(match, "Face", "BoundingBox", "Left"),
                "matched_box_top": member(match, "Face", "BoundingBox", "Top"),
                "matched_box_width": member(match, "Face", "BoundingBox", "Width"),
                "matched_box_height": member(match, "Face", "BoundingBox", "Height"),
                "external_image_id": external,
                "matched_key": key_of(external) if external else None,
            }
        )
    return rows


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows of one SearchFacesByImage response for the whole image (its largest face, index 0)."""
    searched = {
        "searched_by": "image",
        "face_index": 0,
        "searched_face_id": None,
        **placement.box_columns(response.get("SearchedFaceBoundingBox")),
    }
    return {"face_matches": match_rows(searched, response)}


def searched_face(row: Mapping[str, Any], by: str) -> dict[str, Any]:
    """The searched face's columns, from its `indexed_faces` (by "face_id") or `faces` row ("image")."""
    return {
        "searched_by": by,
        "face_index": row.get("face_index"),
        "searched_face_id": row.get("face_id") if by == "face_id" else None,
        **{column: row.get(column) for column in BOX_COLUMNS},
    }


def plan_searches(
    earlier: Mapping[str, list[dict[str, Any]]], collection: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(faces to search by FaceId, faces to crop, or None when the faces must be detected first).

    Faces IndexFaces stored in `collection` for this image are searched by id; when IndexFaces ran,
    the faces it left out (`unindexed_faces`) are cropped; when only `faces` ran, all its faces are.
    """
    indexed = [r for r in earlier.get("indexed_faces", []) if r.get("collection_id") == collection]
    if indexed or any(r.get("collection_id") == collection for r in earlier.get("unindexed_faces", [])):
        left_out = [r for r in earlier.get("unindexed_faces", []) if r.get("collection_id") == collection]
        return indexed, left_out
    if "faces" in earlier:
        return [], list(earlier["faces"])
    return [], None


@dataclass(frozen=True)
class FaceSearches:
    """The calls of a search of every face of an image: by FaceId (a face `index_faces` stored in this
    run), else by the face cut out upright; each (client method, operation), its request builder, and
    the table its matches go to. face_search's, and user_search's among a collection's users."""

    table: str
    by_id: tuple[str, str]
    by_image: tuple[str, str]
    id_request: Callable[[str, Any], dict[str, Any]]
    image_request: Callable[[Mapping[str, Any], Any], dict[str, Any]]
    #: The rows of one search's answer: (searched face's columns, answer, settings).
    match_rows: Callable[[Mapping[str, Any], Mapping[str, Any], Any], list[dict[str, Any]]]


def search_every_face(image: ImageInput, settings: Any, call: Call, searches: FaceSearches) -> MultiOutcome:
    """Search every face of the image (see the module docstring); stop at the first failed call."""
    by_id, to_crop = plan_searches(image.earlier, settings.collection)
    outcome = MultiOutcome({searches.table: []})
    if not by_id and to_crop is None:
        to_crop, detected = detected_faces(call, image.image, image.placement)
        if detected.response is None:  # the image's own error (InvalidImageFormatException): rejected
            outcome.failed, outcome.image_call = ("DetectFaces", detected), True
            return outcome
    rows = outcome.rows[searches.table]
    method, operation = searches.by_id
    for face in by_id:
        found = call(method, operation, searches.id_request(face["face_id"], settings))
        if found.response is None:
            outcome.failed = (operation, found)
            return outcome
        rows += searches.match_rows(searched_face(face, "face_id"), found.response, settings)
    method, operation = searches.by_image
    for face in to_crop or []:
        if face.get("box_left") is None:
            continue  # a face without a box cannot be cut out (never seen: the model always gives one)
        try:
            crop = face_crop(image.pixels(), face, settings.crop_margin)
        except (OSError, ValueError) as exc:
            outcome.failed = (operation, failed_locally("FaceCropFailed", f"{exc}"))
            return outcome
        found = call(method, operation, searches.image_request({"Bytes": crop}, settings))
        if found.response is None:
            outcome.failed = (operation, found)
            return outcome
        rows += searches.match_rows(searched_face(face, "image"), found.response, settings)
    return outcome


def kept_matches(
    searched: Mapping[str, Any], response: Mapping[str, Any], settings: Settings
) -> list[dict[str, Any]]:
    """The rows of one search: its matches but the reference faces, at most `max_matches`."""
    return match_rows(searched, response)[: settings.max_matches]


SEARCHES = FaceSearches(
    "face_matches",
    ("search_faces", "SearchFaces"),
    (CLIENT_METHOD, OPERATION),
    search_by_id_request,
    build_request,
    kept_matches,
)


def run(image: ImageInput, settings: Settings, call: Call) -> MultiOutcome:
    """Search every face of the image in the collection; stop at the first failed call."""
    return search_every_face(image, settings, call, SEARCHES)


@dataclass(frozen=True)
class FaceSearch(Analysis):
    """Several calls per image (one per face), in the collection `index_faces` keeps."""

    def run(self, image: ImageInput, settings: Any, call: Call) -> MultiOutcome:
        return run(image, settings, call)

    def shared_columns(self, settings: Any) -> dict[str, Any]:
        return {"collection_id": settings.collection}

    def settings_document(self, settings: Any) -> dict[str, Any]:
        return settings_document(settings)

    def check(self, settings: Any) -> None:
        if not settings.collection:
            raise ConfigError("analyses.face_search.collection: required by face_search (--collection NAME)")

    def driver(self, setup: DriverSetup) -> DriverHooks:
        return ReferenceCount(setup)


ANALYSIS = FaceSearch(
    name=NAME,
    operation=OPERATION,
    client_method=CLIENT_METHOD,
    settings_type=Settings,
    tables=TABLES,
    build_request=build_request,
    flatten=flatten,
    orientation_field=ORIENTATION_FIELD,
    extra_operations=tuple(o for o in OPERATIONS if o != OPERATION),
    after=AFTER,
    # An InvalidParameterException may be about a face crop, not the image (but an error of the
    # DetectFaces of the whole image is the image's: `MultiOutcome.image_call`).
    rejects_image=False,
    calls_at_least=True,
    # Its matches are FaceIds of the collection, which a resume's sync may delete and index again.
    stateful=True,
)
