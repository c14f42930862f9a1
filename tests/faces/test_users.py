"""Face users' pure parts: the layout of folders, the plan that syncs a collection's users with it, the
requests (checked against botocore's input shapes, patterns and limits included), the ids, and the
`users` / `user_faces` rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from botocore_shapes import rekognition_model
from hypothesis import given
from hypothesis import strategies as st

from batch.analyses.registry import all_tables
from batch.core.errors import ConfigError
from batch.core.external_ids import key_of, reference_image_id, user_id
from batch.core.selection import ListedObject
from batch.core.tables import rows_to_table
from batch.faces.sync import owned
from batch.faces.users import (
    Layout,
    StoredFace,
    UserFace,
    UserPlan,
    faces_request,
    index_request,
    user_request,
    user_tables,
    users_state,
)
from local_stack.validation import validate_request

BUCKET = "photos"
WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def rekognition_input(operation: str) -> Any:
    return rekognition_model().operation_model(operation).input_shape


def listed(key: str, etag: str = "e1") -> ListedObject:
    return ListedObject(key, etag, 1000, WHEN)


def layout(*keys: str) -> Layout:
    return Layout.of(BUCKET, "people/", [listed(k) for k in keys])


@given(st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s))
def test_a_folder_name_becomes_a_user_id_the_model_accepts_and_decodes_back(name: str) -> None:
    try:
        user = user_id(name)
    except ValueError:
        assert len(name.encode()) * 3 > 128
        return
    validate_request(rekognition_input("CreateUser"), {"CollectionId": "c", "UserId": user})
    assert key_of(user) == name


def test_a_reference_face_id_is_no_key_s_id_and_changes_with_the_etag() -> None:
    one = reference_image_id(BUCKET, "people/ada/a.jpg", "e1")
    assert one != reference_image_id(BUCKET, "people/ada/a.jpg", "e2")
    assert key_of(one) is None
    assert not owned(one, "", {})  # the collection sync of index_faces never owns it, whatever the prefix
    validate_request(rekognition_input("IndexFaces"), {"CollectionId": "c", "Image": {"Bytes": "eA=="},
                                                        "ExternalImageId": one})  # fmt: skip


def test_the_layout_has_a_user_per_folder_and_leaves_loose_photos_out() -> None:
    found = layout(
        "people/ada/a.jpg", "people/ada/deep/b.jpg", "people/loose.jpg", "people/grace hopper/c.png"
    )
    users = found.users()
    assert list(users) == ["ada", "grace:20hopper"]
    assert [p.key for p in users["ada"]] == ["people/ada/a.jpg", "people/ada/deep/b.jpg"]
    assert users["grace:20hopper"][0].person == "grace hopper"


def test_a_folder_over_a_hundred_photos_or_with_a_too_long_name_stops_the_run() -> None:
    with pytest.raises(ConfigError, match="101 photos; a user holds at most 100 faces"):
        layout(*(f"people/ada/{n}.jpg" for n in range(101)))
    with pytest.raises(ConfigError, match="a UserId has at most 128"):
        layout("people/" + "é" * 50 + "/a.jpg")


def faces_of(found: Layout, users: dict[str, str | None]) -> list[StoredFace]:
    """One stored face per photo, associated with `users[key]`."""
    return [StoredFace(f"f{i}", p.external_id, users.get(p.key)) for i, p in enumerate(found.photos)]


def test_a_first_sync_creates_every_user_and_indexes_every_photo() -> None:
    found = layout("people/ada/a.jpg", "people/ada/b.jpg", "people/bob/c.jpg")
    plan = UserPlan.of(found, [], [])
    assert plan.create_users == ["ada", "bob"]
    assert [p.key for p in plan.to_index] == [p.key for p in found.photos]
    assert plan.calls() == {"CreateUser": 2, "IndexFaces": 3, "AssociateFaces": 2}
    assert plan.changes


def test_an_unchanged_layout_plans_nothing() -> None:
    found = layout("people/ada/a.jpg", "people/bob/c.jpg")
    stored = faces_of(found, {"people/ada/a.jpg": "ada", "people/bob/c.jpg": "bob"})
    plan = UserPlan.of(found, stored, ["ada", "bob"])
    assert not plan.changes
    assert plan.calls() == {}
    assert set(plan.kept) == {"f0", "f1"}


def test_a_new_photo_is_indexed_a_removed_one_and_a_removed_folder_go() -> None:
    before = layout("people/ada/a.jpg", "people/ada/old.jpg", "people/bob/c.jpg")
    stored = faces_of(
        before, {"people/ada/a.jpg": "ada", "people/ada/old.jpg": "ada", "people/bob/c.jpg": "bob"}
    )
    after = layout("people/ada/a.jpg", "people/ada/new.jpg")
    plan = UserPlan.of(after, stored, ["ada", "bob", "someone-elses"])
    assert [p.key for p in plan.to_index] == ["people/ada/new.jpg"]
    assert plan.disassociate == {"ada": ["f1"]}  # bob's face goes with bob: DeleteUser disassociates it
    assert plan.delete_faces == ["f1", "f2"]
    assert plan.delete_users == ["bob"]  # not "someone-elses": it holds none of our faces
    assert plan.create_users == []
    assert plan.calls() == {"DeleteUser": 1, "DisassociateFaces": 1, "DeleteFaces": 1, "IndexFaces": 1,
                            "AssociateFaces": 1}  # fmt: skip


def test_a_changed_photo_is_a_new_face_and_a_crash_s_leftovers_are_finished() -> None:
    found = layout("people/ada/a.jpg", "people/ada/b.jpg")
    changed = Layout.of(BUCKET, "people/", [listed("people/ada/a.jpg", "e2"), listed("people/ada/b.jpg")])
    stored = faces_of(found, {"people/ada/a.jpg": "ada"})  # b.jpg indexed, not associated: a crash
    stored.append(StoredFace("dup", found.photos[0].external_id, None))  # a retried IndexFaces
    plan = UserPlan.of(changed, stored, ["ada"])
    assert [p.key for p in plan.to_index] == ["people/ada/a.jpg"]  # its new version
    assert plan.associate == {"ada": ["f1"]}
    assert plan.disassociate == {"ada": ["f0"]}
    assert plan.delete_faces == ["f0", "dup"]


def test_the_requests_fit_the_model_and_carry_a_token_per_call() -> None:
    found = layout("people/grace hopper/a.jpg")
    photo = found.photos[0]
    ids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(100)]
    created = user_request("crew", photo.user, "CreateUser")
    associated = faces_request("crew", photo.user, ids, "AssociateFaces", 75.0)
    for operation, request in (
        ("CreateUser", created),
        ("DeleteUser", user_request("crew", photo.user, "DeleteUser")),
        ("AssociateFaces", associated),
        ("DisassociateFaces", faces_request("crew", photo.user, ids[:1], "DisassociateFaces")),
        ("IndexFaces", index_request("crew", {"Bytes": "anBlZw=="}, photo)),
    ):
        validate_request(rekognition_input(operation), request)
    assert associated["UserMatchThreshold"] == 75.0
    assert (
        created["ClientRequestToken"] != user_request("crew", photo.user, "CreateUser")["ClientRequestToken"]
    )
    assert index_request("crew", {"Bytes": b""}, photo)["MaxFaces"] == 1


def test_the_rows_fit_their_schemas_and_the_state_names_each_user_s_faces() -> None:
    found = layout("people/ada/a.jpg", "people/ada/b.jpg", "people/bob/c.jpg")
    stored = faces_of(found, {"people/ada/a.jpg": "ada"})
    plan = UserPlan.of(found, stored, ["ada", "gone"])
    faces = [UserFace(p, f, f != "f2", [] if f != "f2" else ["LOW_MATCH_CONFIDENCE"])
             for f, p in plan.kept.items()]  # fmt: skip
    tables = user_tables(found, plan, faces, "crew")
    for name, rows in tables.items():
        table = rows_to_table([{**row, "run_id": "r1"} for row in rows], all_tables()[name])
        assert isinstance(table, pa.Table)
    changes = {row["user_id"]: row["change"] for row in tables["users"]}
    assert changes == {"ada": "updated", "bob": "created"}
    assert [row["key"] for row in tables["users"]] == ["people/ada/", "people/bob/"]
    assert [row["associated"] for row in tables["user_faces"]] == [True, True, False]
    assert users_state(faces) == (("ada", ("f0", "f1")), ("bob", ()))
