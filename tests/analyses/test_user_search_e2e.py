"""Face users end to end: `rekbatch run --analyses user_search --users s3://BUCKET/people/` as
subprocesses on the local stack, checked against the samples' ground truth and the endpoint's call log.

The convention (docs/local-stack.md): faces are red rectangles and two faces are the same person when
their aspect ratios match (identity groups 3:4 and 1:1). The layout (`local_stack.samples.PEOPLE`):
`people/ada/` (3:4) and `people/grace hopper/` (1:1, a space in the name: UserId `grace:20hopper`).
A user checks that the first run creates one user per folder with its photos' faces, that every face
of every image (a group photo's five, eight Exif orientations) finds its person with an upright box,
and that the ready query lists every image of each person; that a second run after adding a photo and
removing a folder makes only the calls that change (one IndexFaces and AssociateFaces, one DeleteUser
and DeleteFaces) and searches every image again; that a third, unchanged run calls nothing billed; and
that with `index_faces` in the same run the indexed faces are searched by FaceId (SearchUsers) while the
collection sync leaves the reference faces alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore_shapes import validate_response

from batch.query import views
from batch.run import faults
from local_stack import samples
from local_stack.samples import GroundTruth, SampleTruth
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "users"
PHOTOS = ["group/team.jpg", "plain/street.jpg", "empty/nothing.jpg", "orientation/exif-1.jpg",
          "orientation/exif-6.jpg", "orientation/exif-8.jpg", "png/shapes.png"]  # fmt: skip
INDEXED = ["group/team.jpg", "orientation/exif-6.jpg"]
PEOPLE = {truth.name: (data, truth) for data, truth in samples.people_samples()}
LATER = "people/ada/later.png"
REMOVED = "people/grace hopper/badge.jpg"
USERS = f"s3://{BUCKET}/people/"
#: The calls of the users' sync that read the collection: an unchanged layout makes only these.
READS = {"DescribeCollection", "ListFaces", "ListUsers"}
#: The calls user_search makes per image.
SEARCH_OPERATIONS = {"DetectFaces", "SearchUsersByImage", "SearchUsers"}


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    return samples.generate(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def stack(truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.getbasetemp() / "samples0"
    with LocalStack() as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        for prefix, names in (("photos/", PHOTOS), ("indexed/", INDEXED)):
            for name in names:
                s3.put_object(Bucket=BUCKET, Key=prefix + name, Body=(folder / name).read_bytes())
        for name, (data, _) in PEOPLE.items():
            if name != LATER:
                s3.put_object(Bucket=BUCKET, Key=name, Body=data)
        yield local


def rekbatch(stack: LocalStack, out: Path, *args: str) -> str:
    command = [sys.executable, "-m", "batch", *args]
    environment = {
        **os.environ,
        **stack.env,
        "REKBATCH_DASK__N_WORKERS": "1",
        "REKBATCH_REPORT__ENABLED": "false",
    }
    done = subprocess.run(
        command, env=environment, cwd=out.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run(stack: LocalStack, out: Path, prefix: str, analyses: str, run_id: str) -> dict[str, Any]:
    summary = out.parent / f"{run_id}.json"
    rekbatch(stack, out, "run", "--config", str(ROOT / "configs" / "local.toml"),
             "--input", f"s3://{BUCKET}/{prefix}", "--output", str(out), "--analyses", analyses,
             "--collection", "crew", "--users", USERS, "--run-id", run_id,
             "--summary-json", str(summary))  # fmt: skip
    document: dict[str, Any] = json.loads(summary.read_text())
    return document


def rows(out: Path, sql: str) -> list[dict[str, Any]]:
    with views.connect(str(out)) as db:
        result = db.sql(sql)
        return [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]


def calls(stack: LocalStack, since: int) -> Counter[str]:
    """The calls made since call `since` of the log, by operation; every one answered, but the first
    run's DescribeCollection of a collection it then creates."""
    made = stack.calls()[since:]
    failed = [(c["operation"], c["outcome"]) for c in made if c["outcome"] != "ok"]
    assert failed in ([], [("DescribeCollection", "ResourceNotFoundException")]), failed
    return Counter(c["operation"] for c in made if c["outcome"] == "ok")


def drawn_identity(sample: SampleTruth, row: dict[str, Any]) -> str | None:
    """The identity of the drawn face whose upright box the row's box is (2 px of JPEG noise), or fail."""
    box = (row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"])
    found = [f for f in sample.faces if max(abs(a - b) for a, b in zip(box, f.box_px, strict=True)) <= 2]
    assert len(found) == 1, f"{sample.name}: box {box} is none of the drawn faces"
    return found[0].identity


def person_of(identity: str | None, people: set[str]) -> str | None:
    return next((p for p in people if samples.PEOPLE[p] == identity), None)


def check_matches(
    truth: GroundTruth, out: Path, run_id: str, prefix: str, names: list[str], *, people: set[str]
) -> None:
    """Every face of every image matched exactly the user of its identity (when one exists), with its
    upright box; and the ready query, run through `rekbatch sql`, lists each person's images."""
    matches = rows(out, f"SELECT * FROM user_matches WHERE run_id = '{run_id}'")
    seen: Counter[tuple[str, str | None]] = Counter()
    for match in matches:
        identity = drawn_identity(truth.by_name(match["key"].removeprefix(prefix)), match)
        assert match["person"] == person_of(identity, people), match
        assert match["similarity"] >= 80
        seen[(match["key"], match["person"])] += 1
    expected = Counter(
        {(prefix + n, person_of(f.identity, people)): 0 for n in names for f in truth.by_name(n).faces}
    )
    for name in names:
        for face in truth.by_name(name).faces:
            expected[(prefix + name, person_of(face.identity, people))] += 1
    assert seen == +Counter({k: v for k, v in expected.items() if k[1] is not None})
    assert seen[(prefix + "group/team.jpg", "ada")] == 3  # every face of the person, not the largest only
    # The ready query: every image of each person, from each image's latest search (run through
    # `rekbatch sql`, which prints it; its rows read through the same views).
    query = ROOT / "docs" / "queries" / "images_of_each_person.sql"
    printed = rekbatch_sql(out, query)
    listed = {
        (r["person"], r["key"], r["faces"])
        for r in rows(out, query.read_text())
        if r["key"].startswith(prefix)
    }
    assert listed == {(person, key, n) for (key, person), n in seen.items()}
    assert all(key in printed for (key, _) in seen)


def rekbatch_sql(out: Path, query: Path) -> str:
    command = [sys.executable, "-m", "batch", "sql", "--output", str(out), "-f", str(query)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rekognition(stack: LocalStack) -> Any:
    with pytest.MonkeyPatch.context() as env:
        for name, value in stack.env.items():
            env.setenv(name, value)
        return boto3.client("rekognition")


def test_users_follow_their_folders_and_every_face_finds_its_person(
    stack: LocalStack, truth: GroundTruth, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    faces = sum(len(truth.by_name(n).faces) for n in PHOTOS)
    # 1. Two folders: two users created with their three photos' faces; every face searched by its crop.
    before = len(stack.calls())
    summary = run(stack, out, "photos/", "user_search", "users-1")
    made = calls(stack, before)
    assert made == Counter({"CreateCollection": 1, "ListFaces": 1, "ListUsers": 1,
                            "CreateUser": 2, "IndexFaces": 3, "AssociateFaces": 2,
                            "DetectFaces": len(PHOTOS), "SearchUsersByImage": faces})  # fmt: skip
    assert (summary["users"], summary["users_created"], summary["user_faces"]) == (2, 2, 3)
    users = rows(out, "SELECT user_id, person, change, photos, faces_associated FROM users ORDER BY user_id")
    assert users == [
        {"user_id": "ada", "person": "ada", "change": "created", "photos": 2, "faces_associated": 2},
        {"user_id": "grace:20hopper", "person": "grace hopper", "change": "created", "photos": 1,
         "faces_associated": 1},
    ]  # fmt: skip
    user_faces = rows(out, "SELECT key, user_id, associated FROM user_faces ORDER BY key")
    assert [(r["key"], r["user_id"], r["associated"]) for r in user_faces] == [
        ("people/ada/portrait.jpg", "ada", True),
        ("people/ada/turned.jpg", "ada", True),
        ("people/grace hopper/badge.jpg", "grace:20hopper", True),
    ]
    check_matches(truth, out, "users-1", "photos/", PHOTOS, people={"ada", "grace hopper"})

    # 2. A photo added to ada's folder, grace's folder removed: only the calls that change, and every
    # image searched again (the users changed, so their matches did).
    s3 = stack.s3_client()
    s3.put_object(Bucket=BUCKET, Key=LATER, Body=PEOPLE[LATER][0])
    s3.delete_object(Bucket=BUCKET, Key=REMOVED)
    before = len(stack.calls())
    planned = rekbatch(stack, out, "run", "--config", str(ROOT / "configs" / "local.toml"), "--dry-run",
                       "--input", f"s3://{BUCKET}/photos/", "--output", str(out), "--analyses", "user_search",
                       "--collection", "crew", "--users", USERS)  # fmt: skip
    assert set(calls(stack, before)) == READS  # a dry run reads the collection, changes nothing
    assert "would create 0, would delete 1); would index 1 reference faces, would remove 1" in planned
    assert f"would call SearchUsersByImage at least {len(PHOTOS)} times" in planned  # searched again
    before = len(stack.calls())
    summary = run(stack, out, "photos/", "user_search", "users-2")
    made = calls(stack, before)
    assert made == Counter({"DescribeCollection": 1, "ListFaces": 1, "ListUsers": 1, "DeleteUser": 1,
                            "DeleteFaces": 1, "IndexFaces": 1, "AssociateFaces": 1,
                            "DetectFaces": len(PHOTOS), "SearchUsersByImage": faces})  # fmt: skip
    assert (summary["users"], summary["users_deleted"], summary["user_faces_removed"]) == (1, 1, 1)
    latest = rows(
        out, "SELECT user_id, change, faces_associated FROM users WHERE run_id = 'users-2' ORDER BY 1"
    )
    assert latest == [
        {"user_id": "ada", "change": "updated", "faces_associated": 3},
        {"user_id": "grace:20hopper", "change": "deleted", "faces_associated": 0},
    ]
    listed = rekognition(stack).list_faces(CollectionId="crew", MaxResults=100)["Faces"]
    assert Counter(f.get("UserId") for f in listed) == {"ada": 3}  # grace's face deleted with her
    check_matches(truth, out, "users-2", "photos/", PHOTOS, people={"ada"})

    # 3. Nothing changed: the sync reads the collection, and nothing is indexed, associated or searched.
    before = len(stack.calls())
    run(stack, out, "photos/", "user_search", "users-3")
    assert set(calls(stack, before)) == READS
    assert rows(out, "SELECT count(*) AS n FROM user_matches WHERE run_id = 'users-3'") == [{"n": 0}]

    # 4. With index_faces in the run: each face indexed is searched by its FaceId (SearchUsers), and the
    # collection's sync of the indexed images does not take the reference faces for orphans.
    before = len(stack.calls())
    run(stack, out, "indexed/", "index_faces,user_search", "users-4")
    made = calls(stack, before)
    indexed_faces = sum(len(truth.by_name(n).faces) for n in INDEXED)
    assert (made["SearchUsers"], made["SearchUsersByImage"], made["DeleteFaces"]) == (indexed_faces, 0, 0)
    by_id = rows(out, "SELECT * FROM user_matches WHERE run_id = 'users-4'")
    assert {r["searched_by"] for r in by_id} == {"face_id"}
    check_matches(truth, out, "users-4", "indexed/", INDEXED, people={"ada"})


def test_the_endpoint_answers_the_user_operations_in_the_model_s_shape(stack: LocalStack) -> None:
    """Each user operation through a stock boto3 client, each answer checked against botocore's output
    shape, and what the service refuses refused."""
    rek = rekognition(stack)

    def call(operation: str, **request: Any) -> dict[str, Any]:
        answer: dict[str, Any] = getattr(rek, xform_name(operation))(**request)
        validate_response(operation, answer)
        return {k: v for k, v in answer.items() if k != "ResponseMetadata"}

    collection = {"CollectionId": "shapes"}
    call("CreateCollection", **collection)
    ids = {}
    for name in ("people/ada/portrait.jpg", "people/ada/turned.jpg", "people/grace hopper/badge.jpg"):
        indexed = call(
            "IndexFaces", **collection, Image={"Bytes": PEOPLE[name][0]}, ExternalImageId="r", MaxFaces=1
        )
        ids[name] = indexed["FaceRecords"][0]["Face"]["FaceId"]
    ada, turned, grace = ids.values()
    created = call("CreateUser", **collection, UserId="ada", ClientRequestToken="t1")
    assert (
        call("CreateUser", **collection, UserId="ada", ClientRequestToken="t1") == created
    )  # a retry: no conflict
    with pytest.raises(rek.exceptions.ConflictException):
        rek.create_user(**collection, UserId="ada", ClientRequestToken="t2")
    answer = call("AssociateFaces", **collection, UserId="ada", FaceIds=[ada], ClientRequestToken="a1")
    assert (answer["AssociatedFaces"], answer["UserStatus"]) == ([{"FaceId": ada}], "ACTIVE")
    answer = call(
        "AssociateFaces", **collection, UserId="ada", FaceIds=[turned, grace], UserMatchThreshold=80
    )
    assert answer["AssociatedFaces"] == [{"FaceId": turned}]
    (refused,) = answer["UnsuccessfulFaceAssociations"]
    assert (refused["FaceId"], refused["Reasons"]) == (grace, ["LOW_MATCH_CONFIDENCE"])
    assert call("ListUsers", **collection)["Users"] == [{"UserId": "ada", "UserStatus": "ACTIVE"}]
    assert call("DescribeCollection", **collection)["UserCount"] == 1
    assert {f["FaceId"] for f in call("ListFaces", **collection, UserId="ada")["Faces"]} == {ada, turned}
    by_face = call("SearchUsers", **collection, FaceId=turned)
    assert [m["User"]["UserId"] for m in by_face["UserMatches"]] == ["ada"]
    assert call("SearchUsers", **collection, FaceId=grace)["UserMatches"] == []
    assert call("SearchUsers", **collection, UserId="ada")["SearchedUser"] == {"UserId": "ada"}
    team = {"S3Object": {"Bucket": BUCKET, "Name": "photos/group/team.jpg"}}
    group = call("SearchUsersByImage", **collection, Image=team)
    assert "SearchedFace" in group
    assert len(group["UnsearchedFaces"]) == 4  # every face but the largest
    empty = {"S3Object": {"Bucket": BUCKET, "Name": "photos/empty/nothing.jpg"}}
    nothing = call("SearchUsersByImage", **collection, Image=empty)
    assert (nothing["UserMatches"], "SearchedFace" in nothing) == ([], False)
    kept = call("DeleteFaces", **collection, FaceIds=[ada])
    assert kept["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]
    answer = call("DisassociateFaces", **collection, UserId="ada", FaceIds=[ada, grace])
    assert answer["DisassociatedFaces"] == [{"FaceId": ada}]  # grace's face is not ada's: ignored
    call("DeleteUser", **collection, UserId="ada", ClientRequestToken="d1")
    listed = call("ListFaces", **collection)["Faces"]
    assert len(listed) == 3
    assert all("UserId" not in face for face in listed)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.delete_user(**collection, UserId="ada")


def rekbatch_done(
    stack: LocalStack, out: Path, prefix: str, analyses: str, collection: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`rekbatch run` over `prefix` with the users of `USERS` in `collection`, whatever its exit code."""
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", str(out), "--analyses", analyses,
               "--collection", collection, "--users", USERS, *args]  # fmt: skip
    environment = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1",
                   "REKBATCH_REPORT__ENABLED": "false", **env}  # fmt: skip
    return subprocess.run(
        command, env=environment, cwd=out.parent, capture_output=True, text=True, timeout=300
    )


def test_a_corrupt_image_searched_alone_is_rejected_once(stack: LocalStack, tmp_path: Path) -> None:
    """user_search alone sends the image itself only in its DetectFaces: an image Rekognition cannot
    decode is `rejected` (settled), not `failed`, so the next run does not pay for it again."""
    (data,) = [data for data, truth in samples.bad_samples() if truth.name == "bad/truncated.jpg"]
    stack.s3_client().put_object(Bucket=BUCKET, Key="corrupt/truncated.jpg", Body=data)
    out = tmp_path / "out"
    for run_id in ("corrupt-1", "corrupt-2"):
        before = len(stack.calls())
        done = rekbatch_done(stack, out, "corrupt/", "user_search", "corrupt", "--run-id", run_id)
        assert done.returncode == 0, done.stderr
        searched = [c for c in stack.calls()[before:] if c["operation"] in SEARCH_OPERATIONS]
        made = Counter((c["operation"], c["outcome"]) for c in searched)
        assert made == ({("DetectFaces", "InvalidImageFormatException"): 1} if run_id == "corrupt-1" else {})
    images = rows(out, "SELECT run_id, status, status_reason FROM images ORDER BY run_id")
    assert images == [
        {"run_id": "corrupt-1", "status": "rejected", "status_reason": "InvalidImageFormatException"}
    ]
    errors = rows(out, "SELECT analysis, operation, error_code FROM errors")
    assert errors == [
        {"analysis": "user_search", "operation": "DetectFaces", "error_code": "InvalidImageFormatException"}
    ]


def test_face_search_in_the_users_collection_leaves_their_reference_faces_out(
    stack: LocalStack, truth: GroundTruth, tmp_path: Path
) -> None:
    """face_search in the collection user_search keeps its users in: the reference faces are no face
    matches (they are the users', in `user_matches`) and take none of `max_matches` (here 1)."""
    out = tmp_path / "out"
    done = rekbatch_done(stack, out, "indexed/", "index_faces,face_search,user_search", "shared",
                         "--run-id", "shared-1", REKBATCH_ANALYSES__FACE_SEARCH__MAX_MATCHES="1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    references = [
        face["FaceId"]
        for face in rekognition(stack).list_faces(CollectionId="shared", MaxResults=100)["Faces"]
        if face["ExternalImageId"].startswith("::ref:")
    ]
    assert references  # the users' faces are in the collection searched
    matches = rows(out, "SELECT * FROM face_matches")
    assert not {m["face_id"] for m in matches} & set(references)
    assert {m["matched_key"] for m in matches} <= {"indexed/" + name for name in INDEXED}
    # Each of the group photo's three faces of ada finds one of the two others, not a reference face.
    team = [m for m in matches if m["key"] == "indexed/group/team.jpg"]
    assert set(Counter(m["searched_face_id"] for m in team).values()) == {1}
    sample = truth.by_name("group/team.jpg")
    assert [drawn_identity(sample, m) for m in team].count(samples.PEOPLE["ada"]) == 3


def test_a_resume_goes_on_with_changed_reference_photos(stack: LocalStack, tmp_path: Path) -> None:
    """A run killed after its batches, a reference photo added, then `--resume`: a changed config is
    refused before the users' sync bills anything; the same config goes on with the new users (the
    kept batches are not searched again in it, and the next run searches them among the new users)."""
    out = tmp_path / "out"
    added = "people/ada/resumed.png"
    args = ("photos/", "user_search", "resumed")
    crash = rekbatch_done(stack, out, *args, "--run-id", "res-1", **{faults.EXIT_BEFORE_COMMIT: "1"})
    assert crash.returncode == faults.EXIT_BEFORE_COMMIT_CODE, crash.stderr
    s3 = stack.s3_client()
    s3.put_object(Bucket=BUCKET, Key=added, Body=PEOPLE[LATER][0])
    try:
        # Another threshold: refused at once, with nothing called.
        before = len(stack.calls())
        refused = rekbatch_done(stack, out, *args, "--resume", "res-1",
                                REKBATCH_ANALYSES__USER_SEARCH__USER_MATCH_THRESHOLD="85")  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert stack.calls()[before:] == []
        assert "rekbatch: error: run.resume: run res-1 ran over" in refused.stderr
        assert "resume with the same input and config" in refused.stderr
        # The same config: the new photo's face joins ada, the kept batches are the run's images.
        before = len(stack.calls())
        resumed = rekbatch_done(stack, out, *args, "--resume", "res-1")
        assert resumed.returncode == 0, resumed.stderr
        assert "the reference photos (under --users, --reference) changed" in resumed.stderr
        assert calls(stack, before) == Counter(
            {"DescribeCollection": 1, "ListFaces": 1, "ListUsers": 1, "IndexFaces": 1, "AssociateFaces": 1}
        )
        assert rows(out, "SELECT count(DISTINCT key) AS n FROM images WHERE run_id = 'res-1'") == [
            {"n": len(PHOTOS)}
        ]
        photos = s3.list_objects_v2(Bucket=BUCKET, Prefix="people/ada/")["KeyCount"]
        ada = rows(out, "SELECT faces_associated FROM users WHERE run_id = 'res-1' AND user_id = 'ada'")
        assert ada == [{"faces_associated": photos}]
        # The next run searches every image among the users as they are now.
        before = len(stack.calls())
        later = rekbatch_done(stack, out, *args, "--run-id", "res-2")
        assert later.returncode == 0, later.stderr
        assert calls(stack, before)["DetectFaces"] == len(PHOTOS)
    finally:
        s3.delete_object(Bucket=BUCKET, Key=added)
