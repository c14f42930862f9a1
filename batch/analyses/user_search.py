"""User search: every face of the image searched among a collection's users -> table `user_matches`.

Source of truth: botocore's model (`rekognition/2016-06-27/service-2.json`: SearchUsers,
SearchUsersByImage, UserMatch, MatchedUser, CreateUser, AssociateFaces...) and the Developer Guide,
"Searching faces and users" and "Associating faces to a user"
(https://docs.aws.amazon.com/rekognition/latest/dg/associate-faces.html).

A user aggregates up to 100 faces of one person and is matched better than any single face. The users
come from a layout of reference photos, `--users s3://BUCKET/people/` (one folder per person), which
the driver keeps in the collection before the batches (`batch.faces.users`). Then, as face search does
(`batch.analyses.face_search`), every face of every image is searched, not only the largest one that
SearchUsersByImage uses:

* a face IndexFaces stored for this image earlier in the same run (its `indexed_faces` rows, same
  collection) is searched by its FaceId (`SearchUsers`);
* every other face is cut out of the upright image with a margin and searched alone
  (`SearchUsersByImage`); the faces come from this run's `faces` rows, else from one DetectFaces call.

`user_matches`: one row per (searched face, matched user), with the searched face's upright box and
the similarity; `person` is the folder name the UserId stands for. The settings digest covers the
users and their faces: once they change, every image is searched again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batch.analyses._rows import integer, member, number, parse_settings
from batch.analyses.base import Analysis, DriverHooks, DriverSetup, ImageInput, MultiOutcome
from batch.analyses.face_search import SEARCHED_FACE_FIELDS, FaceSearches, search_every_face
from batch.analyses.index_faces import check_collection_id
from batch.core.calls import Call
from batch.core.errors import ConfigError
from batch.core.external_ids import key_of
from batch.core.geometry import BoxPlacement
from batch.core.tables import table_schema
from batch.faces.references import reference_location
from batch.faces.users import USER_SUMMARY_FIELDS, UserHooks

NAME = "user_search"
#: The operation of most calls (the one the dry run counts once per image).
OPERATION = "SearchUsersByImage"
CLIENT_METHOD = "search_users_by_image"
#: Every operation this analysis may call from the workers: each is rate limited and priced as it.
OPERATIONS = ("SearchUsersByImage", "SearchUsers", "DetectFaces")
AFTER = ("index_faces", "faces")
#: `MaxUsers` of the search requests: 1..500 (botocore model, `MaxUserResults`).
MAX_USERS = 500


def _users_url(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    if value:
        _, _, is_prefix = reference_location(value, key)
        if not is_prefix:
            raise ConfigError(
                f"{key}: {value!r} is not a prefix: give s3://BUCKET/PREFIX/, a folder per user"
            )
    return value


def _not_a_setting(key: str, value: Any) -> Any:
    raise ConfigError(f"{key}: set by the job from `users`, not a config key")


@dataclass(frozen=True)
class Settings:
    """`[analyses.user_search]` in the config (`--users` sets `users`, `--collection` `collection`).

    `user_match_threshold` is sent as the searches' `UserMatchThreshold` (users below it are not
    returned), `max_users` as `MaxUsers`; `association_threshold` is AssociateFaces'
    `UserMatchThreshold` (a reference face too unlike its user's other faces is not associated);
    `crop_margin` is the fraction of a face's width and height added around it when it is cut out.
    """

    collection: str = ""
    users: str = ""
    user_match_threshold: float = 80.0
    max_users: int = 10
    association_threshold: float = 75.0
    crop_margin: float = 0.25
    #: Each user and its associated FaceIds after the driver's sync (never read from the config).
    resolved: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "analyses.user_search") -> Settings:
        """Read the settings from a config table; ConfigError names the bad key."""
        return parse_settings(
            cls,
            mapping,
            where,
            {
                "collection": check_collection_id,
                "users": _users_url,
                "user_match_threshold": number(0, 100),
                "max_users": integer(1, MAX_USERS),
                "association_threshold": number(0, 100),
                "crop_margin": number(0, 1),
                "resolved": _not_a_setting,
            },
        )


def settings_document(settings: Settings) -> dict[str, Any]:
    """What the settings digest hashes: the options and a digest of the users' state (empty until the
    driver synced them, so the config digest does not depend on the collection)."""
    document: dict[str, Any] = {
        "collection": settings.collection,
        "users": settings.users,
        "user_match_threshold": settings.user_match_threshold,
        "max_users": settings.max_users,
        "crop_margin": settings.crop_margin,
    }
    if settings.resolved:
        encoded = json.dumps(settings.resolved, separators=(",", ":")).encode()
        document["users_state"] = hashlib.sha256(encoded).hexdigest()
    return document


def build_request(image: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.search_users_by_image` with `image` (a face crop's `Bytes`)."""
    return {
        "CollectionId": settings.collection,
        "Image": dict(image),
        "UserMatchThreshold": settings.user_match_threshold,
        "MaxUsers": settings.max_users,
    }


def search_by_id_request(face_id: str, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `client.search_users` (a face already in the collection)."""
    return {
        "CollectionId": settings.collection,
        "FaceId": face_id,
        "UserMatchThreshold": settings.user_match_threshold,
        "MaxUsers": settings.max_users,
    }


_USER_COLUMNS = [pa.field("collection_id", pa.string()), pa.field("user_id", pa.string()),
                 pa.field("person", pa.string())]  # fmt: skip

TABLES: Mapping[str, pa.Schema] = {
    "user_matches": table_schema(
        [
            *_USER_COLUMNS,
            *SEARCHED_FACE_FIELDS,
            pa.field("similarity", pa.float64()),
            pa.field("user_status", pa.string()),
        ]
    ),
    "users": table_schema(
        [
            *_USER_COLUMNS,
            pa.field("change", pa.string()),
            pa.field("photos", pa.int32()),
            pa.field("faces_associated", pa.int32()),
        ]
    ),
    "user_faces": table_schema(
        [
            *_USER_COLUMNS,
            pa.field("face_id", pa.string()),
            pa.field("external_image_id", pa.string()),
            pa.field("associated", pa.bool_()),
            pa.field("reasons", pa.list_(pa.string())),
        ]
    ),
}


def match_rows(searched: Mapping[str, Any], response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per user match of a search response; `searched` holds the searched face's columns."""
    rows = []
    for match in response.get("UserMatches") or []:
        user = member(match, "User", "UserId")
        rows.append(
            {
                **searched,
                "user_id": user,
                "person": key_of(user) if user else None,
                "similarity": match.get("Similarity"),
                "user_status": member(match, "User", "UserStatus"),
            }
        )
    return rows


def flatten(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    """Rows of one SearchUsersByImage response for the whole image (its largest face, index 0); the
    driver's tables (`users`, `user_faces`) get none from a response."""
    searched = {
        "searched_by": "image",
        "face_index": 0,
        "searched_face_id": None,
        **placement.box_columns(member(response, "SearchedFace", "FaceDetail", "BoundingBox")),
    }
    return {"user_matches": match_rows(searched, response), "users": [], "user_faces": []}


SEARCHES = FaceSearches(
    "user_matches",
    ("search_users", "SearchUsers"),
    (CLIENT_METHOD, OPERATION),
    search_by_id_request,
    build_request,
    lambda searched, response, _settings: match_rows(searched, response),
)


def run(image: ImageInput, settings: Settings, call: Call) -> MultiOutcome:
    """Search every face of the image among the users (see the module docstring); stop at the first
    failed call."""
    return search_every_face(image, settings, call, SEARCHES)


#: `[pricing]` keys besides `user_search`: each IndexFaces of a reference photo and each
#: AssociateFaces or DisassociateFaces call of the users' sync.
USER_PRICES: dict[str, float] = {"user_faces": 0.001}


@dataclass(frozen=True)
class UserSearch(Analysis):
    """Several calls per image (one per face), among the users the driver keeps (`batch.faces.users`)."""

    stateful: bool = True

    def run(self, image: ImageInput, settings: Any, call: Call) -> MultiOutcome:
        return run(image, settings, call)

    def shared_columns(self, settings: Any) -> dict[str, Any]:
        return {"collection_id": settings.collection}

    def settings_document(self, settings: Any) -> dict[str, Any]:
        return settings_document(settings)

    def check(self, settings: Any) -> None:
        if not settings.collection:
            raise ConfigError("analyses.user_search.collection: required by user_search (--collection NAME)")
        if not settings.users:
            raise ConfigError(
                "analyses.user_search.users: required by user_search (--users s3://BUCKET/PREFIX/)"
            )

    def extra_prices(self) -> dict[str, float]:
        return dict(USER_PRICES)

    def summary_fields(self) -> dict[str, Any]:
        return dict(USER_SUMMARY_FIELDS)

    def driver(self, setup: DriverSetup) -> DriverHooks:
        return UserHooks(setup)


ANALYSIS = UserSearch(
    name=NAME,
    operation=OPERATION,
    client_method=CLIENT_METHOD,
    settings_type=Settings,
    tables=TABLES,
    build_request=build_request,
    flatten=flatten,
    orientation_field=None,
    extra_operations=tuple(o for o in OPERATIONS if o != OPERATION),
    after=AFTER,
    # An InvalidParameterException may be about a face crop, not the image (but an error of the
    # DetectFaces of the whole image is the image's: `MultiOutcome.image_call`).
    rejects_image=False,
    calls_at_least=True,
)
