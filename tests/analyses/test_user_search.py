"""User search's pure parts: its requests (against botocore's input shapes), its rows, every face
searched (by FaceId when indexed in the run, else its crop), its settings and digest."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import pytest
from botocore_shapes import rekognition_model
from PIL import Image

from batch.analyses import user_search
from batch.analyses.base import ImageInput
from batch.analyses.registry import REGISTRY, settings_digest
from batch.aws.rekognition import CallResult
from batch.core.errors import ConfigError
from batch.core.geometry import BoxPlacement
from batch.core.tables import rows_to_table
from local_stack.validation import validate_request

SETTINGS = user_search.Settings(collection="crew", users="s3://photos/people/")
FACE_ID = "0b5f1c8e-6d0c-4f55-9d1e-2a7d1c2b9e01"


def test_the_search_requests_fit_the_model() -> None:
    model = rekognition_model()
    by_image = user_search.build_request({"Bytes": "anBlZw=="}, SETTINGS)
    by_id = user_search.search_by_id_request(FACE_ID, SETTINGS)
    validate_request(model.operation_model("SearchUsersByImage").input_shape, by_image)
    validate_request(model.operation_model("SearchUsers").input_shape, by_id)
    assert (by_id["UserMatchThreshold"], by_id["MaxUsers"]) == (80.0, 10)


def test_match_rows_name_the_person_and_keep_the_searched_face() -> None:
    searched = {"searched_by": "image", "face_index": 2, "searched_face_id": None, "box_left": 0.5}
    response = {"UserMatches": [
        {"Similarity": 97.0, "User": {"UserId": "grace:20hopper", "UserStatus": "ACTIVE"}},
        {"Similarity": 81.0, "User": {"UserId": "ada"}},
    ]}  # fmt: skip
    first, second = user_search.match_rows(searched, response)
    assert first == {**searched, "user_id": "grace:20hopper", "person": "grace hopper", "similarity": 97.0,
                     "user_status": "ACTIVE"}  # fmt: skip
    assert (second["person"], second["user_status"]) == ("ada", None)
    assert user_search.match_rows(searched, {}) == []
    table = rows_to_table(
        [
            {**r, "run_id": "r", "bucket": "b", "key": "k", "etag": "e", "collection_id": "crew"}
            for r in (first, second)
        ],
        user_search.TABLES["user_matches"],
    )
    assert table.num_rows == 2


def test_flatten_places_the_largest_face_upright() -> None:
    response = {
        "SearchedFace": {
            "FaceDetail": {"BoundingBox": {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4}}
        },
        "UserMatches": [{"Similarity": 90.0, "User": {"UserId": "ada"}}],
    }
    (row,) = user_search.flatten(response, BoxPlacement(100, 50))["user_matches"]
    assert (row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"]) == (
        10,
        10,
        30,
        20,
    )


def jpeg(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 0, 0)).save(out, "JPEG")
    return out.getvalue()


def test_every_face_is_searched_by_id_or_by_its_crop_until_a_call_fails() -> None:
    made: list[tuple[str, Mapping[str, Any]]] = []

    def call(method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        made.append((operation, request))
        if request.get("FaceId") == "bad":
            return CallResult(None, 3, "ThrottlingException", "slow down")
        return CallResult({"UserMatches": [{"Similarity": 90.0, "User": {"UserId": "ada"}}]}, 1)

    box = {"box_left": 0.1, "box_top": 0.1, "box_width": 0.2, "box_height": 0.2}
    earlier = {
        "indexed_faces": [{"collection_id": "crew", "face_id": "f1", "face_index": 0, **box}],
        "unindexed_faces": [{"collection_id": "crew", "face_index": 1, **box}],
    }
    image = ImageInput({"Bytes": b""}, lambda: jpeg((200, 200)), lambda _: BoxPlacement(200, 200), earlier)
    outcome = user_search.run(image, SETTINGS, call)
    assert [op for op, _ in made] == ["SearchUsers", "SearchUsersByImage"]
    assert Image.open(io.BytesIO(made[1][1]["Image"]["Bytes"])).size == (80, 80)  # 60 px, scaled up
    assert [r["searched_by"] for r in outcome.rows["user_matches"]] == ["face_id", "image"]
    assert outcome.failed is None

    made.clear()
    earlier["indexed_faces"].insert(0, {"collection_id": "crew", "face_id": "bad", "face_index": 2, **box})
    outcome = user_search.run(image, SETTINGS, call)
    assert outcome.failed is not None
    assert outcome.failed[0] == "SearchUsers"
    assert [op for op, _ in made] == ["SearchUsers"]


def test_an_image_no_earlier_analysis_saw_gets_its_faces_detected_first() -> None:
    made: list[str] = []

    def call(method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        made.append(operation)
        if operation == "DetectFaces":
            return CallResult({"FaceDetails": [{"BoundingBox": {"Left": 0.1, "Top": 0.1, "Width": 0.5,
                                                                "Height": 0.5}}]}, 1)  # fmt: skip
        return CallResult({"UserMatches": []}, 1)

    image = ImageInput({"Bytes": b""}, lambda: jpeg((200, 200)), lambda _: BoxPlacement(200, 200), {})
    outcome = user_search.run(image, SETTINGS, call)
    assert made == ["DetectFaces", "SearchUsersByImage"]
    assert outcome.rows == {"user_matches": []}


def test_the_settings_need_a_collection_and_a_prefix_and_the_digest_follows_the_users() -> None:
    analysis = REGISTRY["user_search"]
    with pytest.raises(ConfigError, match="--users"):
        analysis.check(user_search.Settings(collection="crew"))
    with pytest.raises(ConfigError, match="is not a prefix"):
        user_search.Settings.from_mapping({"users": "s3://photos/people"})
    with pytest.raises(ConfigError, match="not a config key"):
        user_search.Settings.from_mapping({"resolved": []})
    synced = dataclasses.replace(SETTINGS, resolved=(("ada", ("f1",)),))
    more = dataclasses.replace(SETTINGS, resolved=(("ada", ("f1", "f2")),))
    digests = {settings_digest(analysis, s) for s in (SETTINGS, synced, more)}
    assert len(digests) == 3
    assert analysis.after == ("index_faces", "faces")
    assert analysis.stateful
