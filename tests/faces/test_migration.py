"""The pure planning of `rekbatch collection migrate`: which images, which are done, the price."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from batch.core.calls import IN_FLIGHT
from batch.core.external_ids import external_image_id
from batch.faces.migration import (
    CommittedImage,
    IndexingRecord,
    MigrationPlan,
    Resumed,
    common_folder,
    dry_run_lines,
    listfaces_response,
    plan_migration,
    resume_plan,
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


def image(key: str, etag: str = "e") -> CommittedImage:
    return CommittedImage("b", key, etag, 10, WHEN, 1)


def face(face_id: str, key: str) -> dict[str, Any]:
    return {"FaceId": face_id, "ExternalImageId": external_image_id(key)}


def by_key(items: list[Resumed]) -> dict[str, Resumed]:
    return {item.image.key: item for item in items}


SENT = {("IndexFaces", IN_FLIGHT): 1}


def sent(attempt: int, key: str, etag: str = "e", foreign: tuple[str, ...] = ()) -> IndexingRecord:
    return IndexingRecord(attempt, key, etag, foreign, SENT)


def test_a_rerun_takes_only_the_faces_an_earlier_attempt_stored_for_the_etag_planned_now() -> None:
    images = [image("kept.jpg"), image("lost.jpg"), image("changed.jpg", "new"), image("todo.jpg")]
    records = [sent(1, "kept.jpg"), sent(1, "lost.jpg"), sent(1, "changed.jpg", "old"), sent(1, "gone.jpg")]
    lost, old, gone = face("f1", "lost.jpg"), face("f2", "changed.jpg"), face("f3", "gone.jpg")
    foreign = face("f9", "todo.jpg")  # another output's run indexed it into TARGET: not ours
    split = resume_plan(images, {"kept.jpg"}, [lost, old, gone, foreign], records)
    found = by_key(split.images)
    assert sorted(found) == ["changed.jpg", "lost.jpg", "todo.jpg"]
    assert found["lost.jpg"] == Resumed(images[1], (lost,), (), SENT)
    assert found["changed.jpg"] == Resumed(images[2], (), (), SENT)
    assert found["todo.jpg"] == Resumed(images[3], (), ("f9",), {})
    assert sorted(split.stale) == ["f2", "f3"]  # gone.jpg is no longer planned: its faces are stale too
    assert [item.image.key for item in split.recovered] == ["lost.jpg"]


def test_faces_a_key_held_before_its_record_are_never_taken_nor_deleted() -> None:
    records = [sent(1, "a.jpg", "old", ("f9",)), sent(2, "b.jpg", "e", ("f8",))]
    faces = [face("f9", "a.jpg"), face("f1", "a.jpg"), face("f8", "b.jpg"), face("f2", "b.jpg")]
    split = resume_plan([image("a.jpg", "new"), image("b.jpg")], (), faces, records)
    assert split.stale == ["f1"]
    found = by_key(split.images)
    assert found["a.jpg"].foreign == ("f9",)
    assert not found["a.jpg"].recovered
    assert found["b.jpg"].foreign == ("f8",)
    assert found["b.jpg"].recovered == (faces[3],)


def test_the_last_record_of_a_key_decides_and_every_record_is_billed() -> None:
    # Attempt 1 indexed "old" (throttled once first); attempt 2 deleted its faces and sent "new".
    throttled = {("IndexFaces", "ThrottlingException"): 1, ("IndexFaces", IN_FLIGHT): 1}
    records = [sent(2, "a.jpg", "new"), IndexingRecord(1, "a.jpg", "old", (), throttled)]
    split = resume_plan([image("a.jpg", "new")], (), [face("f5", "a.jpg")], records)
    assert split.stale == []
    (item,) = split.images
    assert item.recovered == (face("f5", "a.jpg"),)
    assert item.earlier == {("IndexFaces", "ThrottlingException"): 1, ("IndexFaces", IN_FLIGHT): 2}
    # Made again: all but the call whose answer is taken from ListFaces.
    assert item.repeated() == {("IndexFaces", "ThrottlingException"): 1, ("IndexFaces", IN_FLIGHT): 1}
    assert Resumed(image("b.jpg"), (), (), SENT).repeated() == SENT


def test_an_indexing_record_reads_back_as_written() -> None:
    record = IndexingRecord(3, "a b/é.jpg", '"e1"', ("f1", "f2"), {("IndexFaces", "ok"): 1, **SENT})
    assert IndexingRecord.from_json(record.to_json()) == record


def test_a_long_key_is_matched_by_its_digest_external_id() -> None:
    key = "people/" + "é" * 300 + ".jpg"
    found = resume_plan([image(key)], (), [face("f1", key)], [sent(1, key)])
    assert [item.image.key for item in found.recovered] == [key]


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
    empty = CommittedImage("b", "empty.jpg", "e", 0, WHEN, 0)
    found = MigrationPlan(images=[image("a.jpg"), image("b.jpg"), empty], migrated=1)
    prices = {"index_faces": 0.001, "face_storage_month": 0.00001}
    lines = dry_run_lines("old", "new", found, prices, price_key="index_faces")
    assert lines == [
        "migrate old -> new (dry run: no Rekognition call)",
        "  images to index again: 3 (1 already in new)",
        "  IndexFaces: at most 2 calls, at most $0.0020 at list price (1 zero-byte not sent; images not "
        "read: those whose header the checks refuse are counted, though not sent)",
        "  faces new would store: about 2 ($0.0000/month), as old's last indexing of these images stored",
    ]
