"""`rekbatch collection list|describe|delete|export` on the local stack (in-process `batch.cli.main.main`).

What a user checks: the commands show the collections and faces that `ListCollections` and `ListFaces`
show, the export holds exactly the faces ListFaces gives with their keys decoded, and every mistake
(a missing collection, delete without --yes, a bad name, access denied) is one line and an exit code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from conftest import commit_rows, make_image

from batch.cli.main import main
from batch.core.external_ids import external_image_id
from batch.faces.rows import EXPORT_SCHEMA
from batch.storage.commits import RunStore
from batch.storage.sink import Destination
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET = "collection-commands"
UNICODE_KEY = "people/a b/été=1.jpg"
LONG_KEY = "people/" + "é" * 200 + ".jpg"  # escaped, over 255 characters: the digest form
FACES = {UNICODE_KEY: 2, "people/one.jpg": 1, LONG_KEY: 1}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        for key, count in FACES.items():
            rects = tuple(("face", (20 + 100 * n, 30, 70, 90)) for n in range(count))
            local.s3_client().put_object(Bucket=BUCKET, Key=key, Body=make_image(rects=rects))
        yield local


@pytest.fixture(autouse=True)
def aws_env(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)


def rekognition(stack: LocalStack) -> Any:
    return boto3.session.Session().client(
        "rekognition", endpoint_url=stack.env["AWS_ENDPOINT_URL_REKOGNITION"], region_name="us-east-1"
    )


def make_collection(stack: LocalStack, name: str) -> list[dict[str, Any]]:
    """A collection holding the faces of every key of FACES; ListFaces' faces."""
    client = rekognition(stack)
    client.create_collection(CollectionId=name)
    for key in FACES:
        image = {"S3Object": {"Bucket": BUCKET, "Name": key}}
        client.index_faces(CollectionId=name, Image=image, ExternalImageId=external_image_id(key))
    faces: list[dict[str, Any]] = client.list_faces(CollectionId=name, MaxResults=100)["Faces"]
    assert len(faces) == sum(FACES.values())
    return faces


def rekbatch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The exit code, stdout, and stderr without the quota lines every command prints before its first
    call (tests/cli/test_migrate_e2e.py checks them)."""
    code = main(["collection", *args])
    out, err = capsys.readouterr()
    lines = err.splitlines(keepends=True)
    return code, out, "".join(line for line in lines if not line.startswith("rekbatch: quotas"))


def test_list_shows_every_collection_with_its_faces(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    make_collection(stack, "listed")
    rekognition(stack).create_collection(CollectionId="listed-empty")
    code, out, _ = rekbatch(capsys, "list", "--json")
    assert code == 0
    found = {c["collection_id"]: c for c in json.loads(out)}
    assert set(found) >= {"listed", "listed-empty"}
    assert (found["listed"]["faces"], found["listed-empty"]["faces"]) == (4, 0)
    assert found["listed"]["face_model_version"] == "7.0"
    code, out, _ = rekbatch(capsys, "list")
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["collection", "faces", "model", "created"]
    assert (rows["listed"], rows["listed-empty"]) == (["4", "7.0"], ["0", "7.0"])


def test_describe_compares_the_collection_with_the_committed_rows(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    faces = make_collection(stack, "described")
    # A committed run knows three of the four faces, and one face of an older ETag deleted since.
    rows = [
        {"key": "k", "collection_id": "described", "face_id": f["FaceId"], "external_image_id": "x"}
        for f in faces[:3]
    ]
    rows.append({"key": "k", "collection_id": "described", "face_id": "gone", "external_image_id": "x"})
    commit_rows(RunStore(Destination(str(tmp_path))), "run-1", {"indexed_faces": rows})
    code, out, _ = rekbatch(capsys, "describe", "described", "--output", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "collection described"
    assert "  arn: arn:aws:rekognition:us-east-1:123456789012:collection/described" in lines
    assert "  faces: 4 ($0.0000/month at list price)" in lines
    assert lines[-2:] == [
        f"  committed indexed_faces rows in {tmp_path}: 4 faces, 3 of them still stored",
        "  collection and tables agree: no: 1 stored faces no committed row lists",
    ]
    code, out, err = rekbatch(capsys, "describe", "described", "--output", str(tmp_path / "typo"))
    assert (code, out, err) == (3, "", f"rekbatch: error: no committed run under {tmp_path / 'typo'}\n")
    code, out, _ = rekbatch(capsys, "describe", "described", "--json")
    assert (code, json.loads(out)["faces"]) == (0, 4)


def test_export_writes_exactly_the_faces_listfaces_shows_with_their_keys(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    faces = make_collection(stack, "exported")
    local = tmp_path / "sub" / "faces.parquet"
    assert rekbatch(capsys, "export", "exported", "--to", str(local))[:2] == (
        0,
        f"exported 4 faces of collection exported to {local}\n",
    )
    assert rekbatch(capsys, "export", "exported", "--to", f"s3://{BUCKET}/exports/faces.parquet")[0] == 0
    body = stack.s3_client().get_object(Bucket=BUCKET, Key="exports/faces.parquet")["Body"].read()
    (tmp_path / "from-s3.parquet").write_bytes(body)
    expected = {
        f["FaceId"]: (f["ImageId"], f["ExternalImageId"], f["BoundingBox"]["Left"], f["Confidence"])
        for f in faces
    }
    for path in (local, tmp_path / "from-s3.parquet"):
        table = pq.read_table(path)
        assert table.schema == EXPORT_SCHEMA
        rows = table.to_pylist()
        got = {
            r["face_id"]: (r["image_id"], r["external_image_id"], r["box_left"], r["confidence"])
            for r in rows
        }
        assert got == expected
        keys = sorted((r["key"] or "<digest>") for r in rows)
        assert keys == sorted([UNICODE_KEY, UNICODE_KEY, "people/one.jpg", "<digest>"])
        assert {r["collection_id"] for r in rows} == {"exported"}
    assert [p.name for p in local.parent.iterdir()] == ["faces.parquet"]  # no temp file left behind


def test_delete_needs_yes_and_then_deletes_the_collection(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    make_collection(stack, "doomed")
    code, out, err = rekbatch(capsys, "delete", "doomed")
    assert (code, out) == (2, "")
    refusal = "collection delete doomed: deletes the collection and every face in it; add --yes"
    assert err == f"rekbatch: error: {refusal}\n"
    assert "doomed" in rekognition(stack).list_collections()["CollectionIds"]
    code, out, _ = rekbatch(capsys, "delete", "doomed", "--yes")
    assert code == 0
    assert out.splitlines()[0] == "deleted collection doomed and its 4 faces"
    assert "doomed" not in rekognition(stack).list_collections()["CollectionIds"]


@pytest.mark.parametrize(
    "args",
    [("describe", "missing"), ("delete", "missing", "--yes"), ("export", "missing", "--to", "x.parquet")],
    ids=lambda a: a[0],
)
def test_a_missing_collection_is_one_line_and_exit_3(
    stack: LocalStack,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = rekbatch(capsys, *args)
    assert (code, out) == (3, "")
    reason = "collection missing: no such collection (DescribeCollection: ResourceNotFoundException)"
    assert err == f"rekbatch: error: {reason}\n"
    assert list(tmp_path.iterdir()) == []  # export wrote nothing


def test_a_bad_name_or_target_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = rekbatch(capsys, "describe", "no spaces")
    assert (code, err) == (
        2,
        "rekbatch: error: NAME: a collection id is 1-255 letters, digits, '_', '.' or '-', got 'no spaces'\n",
    )
    code, _, err = rekbatch(capsys, "export", "people", "--to", f"s3://{BUCKET}/folder/")
    assert (code, err) == (
        2,
        f"rekbatch: error: --to: expected s3://BUCKET/KEY naming one file, got 's3://{BUCKET}/folder/'\n",
    )


def test_access_denied_is_one_line_and_exit_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalStack(extra_args=["--deny", "ListCollections"]) as denied:
        for name, value in denied.env.items():
            monkeypatch.setenv(name, value)
        code, out, err = rekbatch(capsys, "list")
    assert (code, out) == (3, "")
    assert err.startswith("rekbatch: error: ListCollections: AccessDeniedException: ")
    assert len(err.splitlines()) == 1
