"""Face collections end to end: `rekbatch run --analyses index_faces` as a subprocess on the local stack.

What a user checks: `ListFaces` on the collection shows exactly the faces of the images under the
prefix (no orphan, no duplicate), each face's `ExternalImageId` leads back to its key, and the
`indexed_faces` table lists the same faces with the drawn boxes. Faces are red rectangles; the local
endpoint indexes each one (docs/local-stack.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import make_image

from batch.core.external_ids import external_image_id, key_of
from batch.core.manifest import image_record_path
from batch.query import views
from batch.run import faults
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "faces"
TALL, SQUARE = (66, 88), (76, 76)  # the two identity groups of the sample convention
LONG_KEY = "sync/" + "é" * 300 + "x" * (1024 - 5 - 600 - 4) + ".jpg"  # 1,024 bytes of UTF-8


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        yield local


def faces_image(*shapes: tuple[int, int], width: int = 320) -> bytes:
    """An image with one red face per shape, left to right, 20 px apart."""
    rects, left = [], 20
    for w, h in shapes:
        rects.append(("face", (left, 30, w, h)))
        left += w + 20
    return make_image(size=(width, 200), rects=tuple(rects))


def put(stack: LocalStack, key: str, *shapes: tuple[int, int]) -> None:
    stack.s3_client().put_object(Bucket=BUCKET, Key=key, Body=faces_image(*shapes))


def rekbatch(stack: LocalStack, tmp: Path, prefix: str, *args: str, env: dict[str, str] | None = None) -> int:
    """Run `rekbatch run --analyses index_faces` over the prefix into tmp/out; its exit code."""
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", str(tmp / "out"),
               "--summary-json", str(tmp / "summary.json"), "--analyses", "index_faces", *args]  # fmt: skip
    environment = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1", **(env or {})}
    done = subprocess.run(command, env=environment, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, faults.EXIT_BEFORE_COMMIT_CODE), done.stderr
    return done.returncode


def summary(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "summary.json").read_text())


def rekognition(stack: LocalStack) -> Any:
    return boto3.session.Session().client(
        "rekognition",
        endpoint_url=stack.env["AWS_ENDPOINT_URL_REKOGNITION"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def listed_faces(stack: LocalStack, collection: str) -> list[dict[str, Any]]:
    client, faces, request = rekognition(stack), [], {"CollectionId": collection, "MaxResults": 2}
    while True:  # small pages: the job's own paging is what is under test elsewhere
        page = client.list_faces(**request)
        faces += page["Faces"]
        if "NextToken" not in page:
            return faces
        request["NextToken"] = page["NextToken"]


def current_rows(tmp: Path, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The committed `indexed_faces` rows of the latest run that indexed each of `keys`."""
    columns = ("key", "face_id", "external_image_id", "box_left_px", "box_width_px", "box_height_px")
    with views.connect(str(tmp / "out")) as sql:
        found = sql.sql(
            f"SELECT {', '.join(columns)} FROM indexed_faces "
            "QUALIFY run_id = max(run_id) OVER (PARTITION BY key)"
        ).fetchall()
    return [row for row in (dict(zip(columns, r, strict=True)) for r in found) if row["key"] in keys]


def assert_collection_equals_tables(
    stack: LocalStack, tmp: Path, collection: str, keys: Sequence[str]
) -> None:
    faces = listed_faces(stack, collection)
    ids = Counter(f["FaceId"] for f in faces)
    assert max(ids.values()) == 1, "a face is stored twice"
    rows = current_rows(tmp, keys)
    assert set(ids) == {r["face_id"] for r in rows}, "orphan faces, or rows of faces no longer stored"
    assert {key_of(f["ExternalImageId"]) or f["ExternalImageId"] for f in faces} <= {
        *keys,
        external_image_id(LONG_KEY),
    }
    assert {r["key"] for r in rows} <= set(keys)
    for row in rows:  # the external id goes back to the key, through the table when it is a digest
        assert external_image_id(row["key"]) == row["external_image_id"]


def assert_the_dry_run_predicted_the_run(forecast: dict[str, Any], done: dict[str, Any]) -> None:
    """The dry run's faces and storage calls are the run's; storage is priced apart from IndexFaces."""
    for field in ("faces_stored_before", "faces_deleted", "faces_pruned", "faces_stored"):
        assert forecast[field] == done[field], field  # faces_stored is an estimate, exact here
    planned = {c["operation"]: c["count"] for c in forecast["calls"] if c["outcome"] == "planned"}
    made = {c["operation"]: c["count"] for c in done["calls"] if c["outcome"] == "ok"}
    assert planned == made == {"IndexFaces": 1, "DescribeCollection": 2, "ListFaces": 1, "DeleteFaces": 2}
    assert forecast["storage_cost_usd"] == done["storage_cost_usd"] == pytest.approx(5 * 0.01)
    assert forecast["estimated_cost_usd"] == done["estimated_cost_usd"] == pytest.approx(0.001)


def indexfaces_calls(stack: LocalStack, since: int) -> Counter[str]:
    return Counter(c["name"] for c in stack.calls()[since:] if c["operation"] == "IndexFaces")


def test_the_collection_follows_the_bucket_across_runs(stack: LocalStack, tmp_path: Path) -> None:
    shapes = {
        "sync/two.jpg": (TALL, SQUARE),
        "sync/one.jpg": (TALL,),
        "sync/a b/c=d+e é.jpg": (SQUARE,),
        "sync/none.jpg": (),
        LONG_KEY: (SQUARE,),
    }
    for key, drawn in shapes.items():
        put(stack, key, *drawn)
    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "sync/", "--collection", "people") == 0
    assert indexfaces_calls(stack, before) == Counter(list(shapes))  # every image once
    assert_collection_equals_tables(stack, tmp_path, "people", list(shapes))
    rows = current_rows(tmp_path, list(shapes))
    for key, drawn in shapes.items():  # every face indexed once, with its drawn box
        found = sorted(
            (r["box_left_px"], r["box_width_px"], r["box_height_px"]) for r in rows if r["key"] == key
        )
        expected, left = [], 20
        for w, h in drawn:
            expected.append((left, w, h))
            left += w + 20
        assert len(found) == len(expected), key
        for got, drawn_box in zip(found, expected, strict=True):
            assert max(abs(a - b) for a, b in zip(got, drawn_box, strict=True)) <= 2, key
    assert summary(tmp_path)["faces_stored"] == 5

    # A changed image (one face instead of two) and a deleted one, with --prune: a dry run first.
    put(stack, "sync/two.jpg", SQUARE)
    stack.s3_client().delete_object(Bucket=BUCKET, Key="sync/one.jpg")
    priced = {"REKBATCH_PRICING__STORAGE_OPERATION": "0.01"}
    stored = listed_faces(stack, "people")
    before = len(stack.calls())
    assert (
        rekbatch(stack, tmp_path, "sync/", "--collection", "people", "--prune", "--dry-run", env=priced) == 0
    )
    forecast = summary(tmp_path)
    assert {c["operation"] for c in stack.calls()[before:]} == {"DescribeCollection", "ListFaces"}
    assert listed_faces(stack, "people") == stored  # the dry run changed nothing
    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "sync/", "--collection", "people", "--prune", env=priced) == 0
    assert indexfaces_calls(stack, before) == Counter({"sync/two.jpg": 1})
    current = [k for k in shapes if k != "sync/one.jpg"]
    assert_collection_equals_tables(stack, tmp_path, "people", current)
    assert len(listed_faces(stack, "people")) == 3
    done = summary(tmp_path)
    assert (done["faces_pruned"], done["faces_deleted"]) == (1, 3)
    assert_the_dry_run_predicted_the_run(forecast, done)
    with views.connect(str(tmp_path / "out")) as sql:  # the runs row prices storage apart too
        rows = sql.sql("SELECT estimated_cost_usd, storage_cost_usd FROM runs ORDER BY started_at").fetchall()
    assert rows[-1] == (done["estimated_cost_usd"], done["storage_cost_usd"])

    # Nothing changed: no IndexFaces at all, and the collection stays as it is.
    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "sync/", "--collection", "people", "--prune") == 0
    assert indexfaces_calls(stack, before) == Counter()
    assert_collection_equals_tables(stack, tmp_path, "people", current)


def test_faces_the_collection_lost_are_indexed_again(stack: LocalStack, tmp_path: Path) -> None:
    """Faces deleted behind the job's back, or the whole collection deleted: the tables say done, but
    the collection must hold every face of the current images."""
    shapes = {
        "lost/a.jpg": (TALL, SQUARE),
        "lost/b.jpg": (SQUARE,),
        "lost/c.jpg": (TALL,),
        "lost/none.jpg": (),
    }
    for key, drawn in shapes.items():
        put(stack, key, *drawn)
    assert rekbatch(stack, tmp_path, "lost/", "--collection", "lossy") == 0
    keys = list(shapes)
    one_of_a = next(
        f["FaceId"] for f in listed_faces(stack, "lossy") if key_of(f["ExternalImageId"]) == keys[0]
    )
    rekognition(stack).delete_faces(CollectionId="lossy", FaceIds=[one_of_a])

    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "lost/", "--collection", "lossy") == 0
    assert indexfaces_calls(stack, before) == Counter({"lost/a.jpg": 1})  # its other face deleted first
    assert_collection_equals_tables(stack, tmp_path, "lossy", keys)
    assert len(listed_faces(stack, "lossy")) == 4

    rekognition(stack).delete_collection(CollectionId="lossy")
    assert rekbatch(stack, tmp_path, "lost/", "--collection", "lossy", "--dry-run") == 0
    planned = {c["operation"]: c["count"] for c in summary(tmp_path)["calls"] if c["outcome"] == "planned"}
    assert planned["IndexFaces"] == 3
    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "lost/", "--collection", "lossy") == 0
    assert indexfaces_calls(stack, before) == Counter(keys[:3])  # none.jpg had no face to lose
    assert_collection_equals_tables(stack, tmp_path, "lossy", keys)
    assert len(listed_faces(stack, "lossy")) == 4


def crash_after_indexing(stack: LocalStack, tmp_path: Path, keys: list[str]) -> list[Path]:
    """A run over `keys` that indexed every face and died before its commit; its batch records."""
    for n, key in enumerate(keys):
        put(stack, key, *((TALL, SQUARE) if n % 2 else (SQUARE,)))
    crash = {faults.EXIT_BEFORE_COMMIT: "1"}
    args = ("--collection", "crashed", "--run-id", "night-1")
    assert rekbatch(stack, tmp_path, "crash/", *args, env=crash) == faults.EXIT_BEFORE_COMMIT_CODE
    assert len(listed_faces(stack, "crashed")) == 12  # indexed, and no table knows them yet
    records = sorted((tmp_path / "out" / "_runs" / "night-1").glob("batch-*.json"))
    assert len(records) == 2  # 8 images, 4 per batch
    return records


def test_a_crash_between_indexing_and_commit_leaves_no_orphan_after_resume(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = [f"crash/{n:02d}.jpg" for n in range(8)]
    records = crash_after_indexing(stack, tmp_path, keys)
    # The records of the second batch and of its images are lost: its images count as not done.
    for key, etag, *_ in json.loads(records[1].read_text())["images"]:
        (tmp_path / "out" / image_record_path("night-1", 1, key, etag)).unlink()
    records[1].unlink()

    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "crash/", "--collection", "crashed", "--resume", "night-1") == 0
    assert indexfaces_calls(stack, before) == Counter(keys[4:])
    assert summary(tmp_path)["faces_deleted"] == 6  # the unfinished batch's faces, found by ListFaces
    assert_collection_equals_tables(stack, tmp_path, "crashed", keys)
    assert len(listed_faces(stack, "crashed")) == 12


def test_a_resume_keeps_the_faces_of_images_done_in_a_batch_cut_short(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = [f"crash/{n:02d}.jpg" for n in range(8)]
    records = crash_after_indexing(stack, tmp_path, keys)
    records[1].unlink()  # the second batch did not finish, but each of its images did (their records)

    before = len(stack.calls())
    assert rekbatch(stack, tmp_path, "crash/", "--collection", "crashed", "--resume", "night-1") == 0
    assert indexfaces_calls(stack, before) == Counter()  # their faces are kept, not indexed again
    assert (summary(tmp_path)["faces_deleted"], summary(tmp_path)["kept_images"]) == (0, 8)
    assert_collection_equals_tables(stack, tmp_path, "crashed", keys)
    assert len(listed_faces(stack, "crashed")) == 12


def test_a_bad_collection_name_is_a_one_line_config_error(stack: LocalStack, tmp_path: Path) -> None:
    put(stack, "bad/one.jpg", TALL)
    command = [sys.executable, "-m", "batch", "run", "--input", f"s3://{BUCKET}/bad/",
               "--output", str(tmp_path / "out"), "--analyses", "index_faces",
               "--collection", "no spaces"]  # fmt: skip
    done = subprocess.run(
        command, env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rekbatch: error: analyses.index_faces.collection: a collection id is 1-255 letters, digits, "
        "'_', '.' or '-', got 'no spaces' (from flag --collection)"
    ]
