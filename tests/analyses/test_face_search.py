"""Face search's pure parts: the crop around a face, the rows of a search, which faces are searched how."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from batch.analyses import face_search
from batch.analyses.base import ImageInput
from batch.analyses.face_crops import MIN_CROP_SIDE, crop_box, face_crop
from batch.analyses.registry import REGISTRY, in_run_order
from batch.aws.rekognition import CallResult
from batch.core.errors import ConfigError
from batch.core.external_ids import external_image_id, reference_image_id
from batch.core.geometry import BoxPlacement

fractions = st.floats(0, 1)


@st.composite
def boxes(draw: st.DrawFn) -> dict[str, float]:
    left, top = draw(fractions), draw(fractions)
    width = draw(st.floats(0, 1 - left)) if left < 1 else 0.0
    height = draw(st.floats(0, 1 - top)) if top < 1 else 0.0
    return {"box_left": left, "box_top": top, "box_width": width, "box_height": height}


@given(boxes(), st.integers(1, 4000), st.integers(1, 4000), st.floats(0, 1))
def test_the_crop_holds_the_face_and_its_margin_inside_the_image(
    box: dict[str, float], width: int, height: int, margin: float
) -> None:
    x0, y0, x1, y1 = crop_box(box, width, height, margin)
    assert 0 <= x0 < x1 <= width
    assert 0 <= y0 < y1 <= height
    face_x0, face_x1 = box["box_left"] * width, (box["box_left"] + box["box_width"]) * width
    face_y0, face_y1 = box["box_top"] * height, (box["box_top"] + box["box_height"]) * height
    assert x0 <= max(face_x0, 0) + 1e-6
    assert y0 <= max(face_y0, 0) + 1e-6
    assert x1 >= min(face_x1, width) - 1e-6
    assert y1 >= min(face_y1, height) - 1e-6
    # The margin is added, not more (one pixel of rounding on each side).
    assert x1 - x0 <= (1 + 2 * margin) * box["box_width"] * width + 2


def test_the_margin_is_a_fraction_of_the_face_on_every_side() -> None:
    box = {"box_left": 0.4, "box_top": 0.2, "box_width": 0.1, "box_height": 0.2}
    assert crop_box(box, 1000, 500, 0.5) == (350, 50, 550, 250)
    assert crop_box(box, 1000, 500, 0.0) == (400, 100, 500, 200)


def test_a_small_face_is_cut_from_the_upright_image_and_scaled_up() -> None:
    upright = Image.new("RGB", (200, 100), (0, 0, 0))
    upright.paste((255, 0, 0), (150, 10, 170, 40))  # a red 20x30 face on the right
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # Exif 6 stores it turned left
    exif = Image.Exif()
    exif[0x0112] = 6
    data = io.BytesIO()
    stored.save(data, "JPEG", exif=exif, quality=95)
    box = {"box_left": 0.75, "box_top": 0.1, "box_width": 0.1, "box_height": 0.3}
    with Image.open(io.BytesIO(face_crop(data.getvalue(), box, 0.0))) as crop:
        assert min(crop.size) == MIN_CROP_SIDE
        assert crop.height > crop.width
        red, green, _ = crop.convert("RGB").getpixel((crop.width // 2, crop.height // 2))
        assert red > 200
        assert green < 60


BOX = {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4}


def test_match_rows_flatten_every_match_with_the_searched_face_and_the_key() -> None:
    searched = {"searched_by": "face_id", "face_index": 1, "searched_face_id": "s", "box_left": 0.5}
    response = {
        "FaceMatches": [
            {"Similarity": 99.5, "Face": {"FaceId": "a", "ExternalImageId": external_image_id("p/a b.jpg"),
                                          "BoundingBox": BOX}},
            {"Similarity": 81.0, "Face": {"FaceId": "b", "ExternalImageId": external_image_id("k" * 300)}},
        ]
    }  # fmt: skip
    first, second = face_search.match_rows(searched, response)
    assert first == {
        **searched, "similarity": 99.5, "face_id": "a", "external_image_id": "p:2Fa:20b.jpg",
        "matched_box_left": 0.1, "matched_box_top": 0.2, "matched_box_width": 0.3, "matched_box_height": 0.4,
        "matched_key": "p/a b.jpg",
    }  # fmt: skip
    assert second["matched_key"] is None
    assert second["matched_box_left"] is None
    assert face_search.match_rows(searched, {}) == []


SETTINGS = face_search.Settings(collection="crew")


def test_indexed_faces_are_searched_by_id_and_left_out_ones_are_cropped() -> None:
    indexed = [{"collection_id": "crew", "face_id": "f1"}, {"collection_id": "other", "face_id": "f2"}]
    unindexed = [{"collection_id": "crew", "face_index": 3}]
    earlier = {"indexed_faces": indexed, "unindexed_faces": unindexed, "faces": [{"face_index": 0}]}
    assert face_search.plan_searches(earlier, "crew") == ([indexed[0]], unindexed)
    assert face_search.plan_searches({"faces": [{"face_index": 0}]}, "crew") == ([], [{"face_index": 0}])
    assert face_search.plan_searches({"indexed_faces": indexed[1:]}, "crew") == ([], None)  # detect first


def test_face_search_runs_after_the_analyses_whose_rows_it_reads() -> None:
    assert in_run_order(["face_search", "labels", "index_faces"]) == ("labels", "index_faces", "face_search")
    assert in_run_order(["faces", "face_search"]) == ("faces", "face_search")


@given(
    st.lists(st.sampled_from(sorted(REGISTRY)), min_size=1, unique=True),
    st.integers(min_value=0, max_value=50),
)
def test_a_rotated_run_order_runs_each_analysis_once_and_after_what_it_reads(
    names: list[str], start: int
) -> None:
    order = in_run_order(names, start)
    assert sorted(order) == sorted(names)
    for position, name in enumerate(order):
        assert not set(REGISTRY[name].after) & set(order[position + 1 :])


def test_consecutive_images_begin_with_each_independent_analysis_in_turn() -> None:
    names = ["labels", "faces", "text", "moderation", "celebrities"]
    assert [in_run_order(names, start)[0] for start in range(7)] == [*names, "labels", "faces"]
    # face_search never comes first: it waits for index_faces, which comes first in its turn.
    firsts = {in_run_order(["face_search", "labels", "index_faces"], start)[0] for start in range(3)}
    assert firsts == {"labels", "index_faces"}


def test_run_stops_at_the_first_failed_call_and_keeps_the_rows_so_far() -> None:
    made: list[tuple[str, Mapping[str, Any]]] = []

    def call(method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        made.append((operation, request))
        if request["FaceId"] == "bad":
            return CallResult(None, 3, "ThrottlingException", "slow down")
        return CallResult({"FaceMatches": [{"Similarity": 90.0, "Face": {"FaceId": "z"}}]}, 1)

    indexed = [
        {"collection_id": "crew", "face_id": f, "face_index": i} for i, f in enumerate(["ok", "bad", "no"])
    ]
    image = ImageInput({"Bytes": b""}, bytes, lambda _: BoxPlacement(10, 10), {"indexed_faces": indexed})
    outcome = face_search.run(image, SETTINGS, call)
    assert [r["face_id"] for r in outcome.rows["face_matches"]] == ["z"]
    assert outcome.failed is not None
    assert outcome.failed[0] == "SearchFaces"
    assert [request["FaceId"] for _, request in made] == ["ok", "bad"]


def test_reference_faces_are_no_matches_and_take_no_slot() -> None:
    """user_search's reference faces in a shared collection: each search asks for as many more matches
    (never over MaxFaces' 4096), leaves them out and keeps `max_matches`; the count is not a setting."""
    settings = face_search.Settings(collection="crew", max_matches=2, reference_faces=3)
    assert face_search.build_request({"Bytes": b""}, settings)["MaxFaces"] == 5
    assert face_search.search_by_id_request("f", settings)["MaxFaces"] == 5
    assert face_search.max_faces(face_search.Settings(max_matches=4000, reference_faces=200)) == 4096
    response = {
        "FaceMatches": [
            {"Similarity": 100.0 - n, "Face": {"FaceId": f"f{n}", "ExternalImageId": external}}
            for n, external in enumerate(
                [reference_image_id("b", "people/ada/a.jpg", '"e"'), "k1.jpg", "::ref:x", "k2.jpg", "k3.jpg"]
            )
        ]
    }
    rows = face_search.SEARCHES.match_rows({"searched_by": "image"}, response, settings)
    assert [r["matched_key"] for r in rows] == ["k1.jpg", "k2.jpg"]
    assert face_search.settings_document(settings) == face_search.settings_document(
        face_search.Settings(collection="crew", max_matches=2)
    )
    with pytest.raises(ConfigError, match="reference_faces: counted by the job"):
        face_search.Settings.from_mapping({"reference_faces": 3})


def test_an_image_error_of_the_whole_image_s_detect_faces_is_the_image_s() -> None:
    """The DetectFaces of the whole image (no faces from earlier analyses) sends the image itself: its
    failure marks the outcome `image_call` (the image is rejected); a crop's failure does not."""

    def call(method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        if operation == "DetectFaces":
            return CallResult(None, 1, "InvalidImageFormatException", "bad image")
        return CallResult(None, 1, "InvalidImageFormatException", "bad crop")

    image = ImageInput({"Bytes": b""}, bytes, lambda _: BoxPlacement(10, 10), {})
    outcome = face_search.run(image, SETTINGS, call)
    assert (outcome.failed is not None, outcome.image_call) == (True, True)
    indexed = [{"collection_id": "crew", "face_id": "f", "face_index": 0}]
    image = ImageInput({"Bytes": b""}, bytes, lambda _: BoxPlacement(10, 10), {"indexed_faces": indexed})
    outcome = face_search.run(image, SETTINGS, call)
    assert (outcome.failed is not None, outcome.image_call) == (True, False)
