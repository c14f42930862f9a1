"""The pure planning of `rekbatch collection migrate`: which images, which are done, the price."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from batch.core.external_ids import external_image_id
from batch.faces.migration import (
    CommittedImage,
    MigrationPlan,
    common_folder,
    dry_run_lines,
    listfaces_response,
    plan_migration,
    resume_split,
)

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def row(key: str, etag: str, *settled: tuple[str, str], bucket: str = "b") -> dict[str, Any]:
    return {
        "bucket": bucket,
        "key": key,
        "etag": etag,
        "size_bytes": 10,
        "last_modified": WHEN,
        "analyses_done": [{"analysis": a, "settings_digest": d} for a, d in settled],
    }


def plan(rows: list[dict[str, Any]], indexed: dict[tuple[str, str], int]) -> MigrationPlan:
    return plan_migration(rows, indexed, analysis="index_faces", source_digest="S", target_digest="T")


def test_each_key_is_planned_at_the_last_etag_settled_with_source() -> None:
    rows = [
        row("a.jpg", "e1", ("index_faces", "S")),
        row("b.jpg", "e1", ("index_faces", "S"), ("labels", "L")),
        row("a.jpg", "e2", ("index_faces", "S")),  # changed, indexed again: e2 is what SOURCE holds
        row("c.jpg", "e1", ("labels", "L")),  # never indexed into SOURCE
        row("d.jpg", "e1", ("index_faces", "X")),  # another collection or other settings
    ]
    found = plan(rows, {("a.jpg", "e1"): 1, ("a.jpg", "e2"): 3, ("b.jpg", "e1"): 2})
    assert [(i.key, i.etag, i.faces) for i in found.images] == [("b.jpg", "e1", 2), ("a.jpg", "e2", 3)]
    assert (found.migrated, found.unsettled, found.faces) == (0, [], 5)


def test_an_image_settled_with_target_is_migrated_already_unless_it_changed_since() -> None:
    rows = [
        row("a.jpg", "e1", ("index_faces", "S")),
        row("b.jpg", "e1", ("index_faces", "S")),
        row("a.jpg", "e1", ("index_faces", "T")),  # an earlier migration
        row("b.jpg", "e1", ("index_faces", "T")),
        row("b.jpg", "e2", ("index_faces", "S")),  # SOURCE's nightly run after it: b changed
    ]
    found = plan(rows, {})
    assert [(i.key, i.etag) for i in found.images] == [("b.jpg", "e2")]
    assert found.migrated == 1


def test_an_image_changed_since_that_a_run_indexed_into_target_is_migrated() -> None:
    rows = [
        row("a.jpg", "e1", ("index_faces", "S")),
        row("a.jpg", "e2", ("index_faces", "T")),  # nightly runs switched to TARGET, a changed since
    ]
    found = plan(rows, {("a.jpg", "e1"): 1})
    assert (found.images, found.migrated) == ([], 1)


def test_an_image_without_faces_is_planned_so_runs_against_target_skip_it() -> None:
    found = plan([row("empty.jpg", "e1", ("index_faces", "S"))], {})
    assert [(i.key, i.faces) for i in found.images] == [("empty.jpg", 0)]


def test_keys_the_rows_list_but_no_image_settled_with_these_settings_are_reported() -> None:
    rows = [row("a.jpg", "e1", ("index_faces", "OTHER")), row("b.jpg", "e1", ("index_faces", "S"))]
    found = plan(rows, {("a.jpg", "e1"): 1, ("b.jpg", "e1"): 1})
    assert found.unsettled == ["a.jpg"]


def image(key: str) -> CommittedImage:
    return CommittedImage("b", key, "e", 10, WHEN, 1)


def test_a_resumed_migration_indexes_only_what_no_batch_kept_and_target_does_not_hold() -> None:
    images = [image("kept.jpg"), image("lost-answer.jpg"), image("todo.jpg")]
    stray = {"FaceId": "f9", "ExternalImageId": external_image_id("other.jpg")}
    face = {"FaceId": "f1", "ExternalImageId": external_image_id("lost-answer.jpg")}
    split = resume_split(images, {"kept.jpg"}, [face, stray])
    assert [(i.key, faces) for i, faces in split.recovered] == [("lost-answer.jpg", [face])]
    assert [i.key for i in split.to_index] == ["todo.jpg"]


def test_a_long_key_is_matched_by_its_digest_external_id() -> None:
    key = "people/" + "é" * 300 + ".jpg"
    face = {"FaceId": "f1", "ExternalImageId": external_image_id(key)}
    assert [i.key for i, _ in resume_split([image(key)], (), [face]).recovered] == [key]


def test_listfaces_faces_make_the_indexfaces_answer_the_rows_are_built_from() -> None:
    box = {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4}
    faces = [{"FaceId": "f1", "BoundingBox": box, "Confidence": 99.0, "IndexFacesModelVersion": "7.0"}]
    response = listfaces_response(faces)
    assert response["FaceModelVersion"] == "7.0"
    assert response["FaceRecords"] == [
        {"Face": faces[0], "FaceDetail": {"BoundingBox": box, "Confidence": 99.0}}
    ]


@pytest.mark.parametrize(
    ("keys", "folder"),
    [
        (["a/b/c.jpg", "a/b/d.jpg"], "a/b/"),
        (["a/b/c.jpg", "a/bc/d.jpg"], "a/"),
        (["a/b/c.jpg", "x.jpg"], ""),
        (["a/b/c.jpg"], "a/b/"),
        ([], ""),
    ],
)
def test_the_input_named_is_the_folder_that_holds_every_key(keys: list[str], folder: str) -> None:
    assert common_folder(keys) == folder


def test_the_dry_run_prices_the_calls_and_the_faces_stored() -> None:
    found = MigrationPlan(images=[image("a.jpg"), image("b.jpg")], migrated=1)
    prices = {"index_faces": 0.001, "face_storage_month": 0.00001}
    lines = dry_run_lines("old", "new", found, prices, price_key="index_faces")
    assert lines == [
        "migrate old -> new (dry run: no Rekognition call)",
        "  images to index again: 2 (1 already in new)",
        "  IndexFaces: 2 calls, $0.0020 at list price",
        "  faces new would store: about 2 ($0.0000/month), as old's last indexing of these images stored",
    ]
