"""Issue 19: results always describe the ETag they carry, when an object is rewritten during its analysis.

The CLI runs as a subprocess on the local stack, whose endpoint answers each call after 1.5 s; the
test rewrites one image (a green box) with another picture (a face and a line of text) as soon as the
endpoint has logged the first call for it, so the image's later calls come after the rewrite. Without
versions the image must end `changed` (an `ObjectChanged` row, none of its result rows) and the next run
analyse the new picture; with versions every call must read the version listed, whose box is all the
rows show, under its ETag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import make_image

from batch.query import views
from local_stack.stack import LocalStack
from local_stack.vision import content_digest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "in/"
TARGET = f"{PREFIX}rewritten.jpg"
OTHER = f"{PREFIX}other.jpg"
ANALYSES = ("labels", "faces", "text")
LATENCY_MS = 1500  # as in the issue; the rewrite must land before the third call, 3 s after the first
OLD = make_image(rects=(("box", (40, 40, 120, 100)),))
NEW = make_image(rects=(("face", (30, 30, 66, 88)), ("text", (130, 160, 160, 40))))


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--latency-ms", str(LATENCY_MS)]) as local:
        yield local


def seed(stack: LocalStack, bucket: str, *, versioned: bool) -> dict[str, Any]:
    """The bucket with the two images; the target's PutObject answer (ETag, VersionId)."""
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key=OTHER, Body=make_image(rects=(("box", (20, 20, 90, 70)),)))
    answer: dict[str, Any] = s3.put_object(Bucket=bucket, Key=TARGET, Body=OLD)
    return answer


def command(bucket: str, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
            "--input", f"s3://{bucket}/{PREFIX}", "--output", str(tmp / "out"),
            "--analyses", ",".join(ANALYSES), "--summary-json", str(tmp / "summary.json")]  # fmt: skip


def environment(stack: LocalStack) -> dict[str, str]:
    return {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1"}


def run_rewriting_midway(stack: LocalStack, bucket: str, tmp: Path) -> float:
    """Run the job; once the endpoint has logged a call for the target, rewrite it. When it was rewritten."""
    before = len(stack.calls())
    with subprocess.Popen(
        command(bucket, tmp),
        env=environment(stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as job:
        while not any(c["name"] == TARGET for c in stack.calls()[before:]):
            assert job.poll() is None, job.communicate()
            time.sleep(0.02)
        stack.s3_client().put_object(Bucket=bucket, Key=TARGET, Body=NEW)
        rewritten_at = time.time()
        _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    return rewritten_at


def run(stack: LocalStack, bucket: str, tmp: Path) -> None:
    result = subprocess.run(
        command(bucket, tmp), env=environment(stack), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr


def target_calls(stack: LocalStack, bucket: str) -> list[dict[str, Any]]:
    return [c for c in stack.calls() if (c["bucket"], c["name"]) == (bucket, TARGET)]


def rows(sql: duckdb.DuckDBPyConnection, table: str, etag: str | None = None) -> list[dict[str, Any]]:
    query = f"SELECT * FROM {table} WHERE key = ?" + (" AND etag = ?" if etag else "")
    cursor = sql.execute(query, [TARGET, etag] if etag else [TARGET])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_without_versions_a_rewritten_image_is_changed_and_the_next_run_analyses_the_new_one(
    stack: LocalStack, tmp_path: Path
) -> None:
    bucket = "pin-unversioned"
    old_etag = seed(stack, bucket, versioned=False)["ETag"].strip('"')
    rewritten_at = run_rewriting_midway(stack, bucket, tmp_path)
    calls = target_calls(stack, bucket)
    assert len(calls) == len(ANALYSES)
    # The premise: some of the image's calls read the new picture (the endpoint reads at arrival).
    assert any(c["ts"] > rewritten_at for c in calls)
    assert {c["digest"] for c in calls} >= {content_digest(NEW)}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["images"]["analysed"], summary["images"]["changed"]) == (1, 1)
    assert summary["error_rate"] == 0.0
    sql = views.connect(str(tmp_path / "out"))
    (image,) = rows(sql, "images")
    assert (image["etag"], image["status"], image["status_reason"]) == (old_etag, "changed", "ObjectChanged")
    assert (image["analyses"], image["analyses_done"]) == ([], [])
    (error,) = rows(sql, "errors")
    assert (error["error_code"], error["operation"], error["etag"]) == (
        "ObjectChanged",
        "HeadObject",
        old_etag,
    )
    for table in ("labels", "faces", "text"):
        assert rows(sql, table) == [], table

    # The next run: the other image is unchanged, the target analysed anew, under its new ETag.
    before = len(stack.calls())
    run(stack, bucket, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["images"]["analysed"], summary["images"]["unchanged"]) == (1, 1)
    new_etag = stack.s3_client().head_object(Bucket=bucket, Key=TARGET)["ETag"].strip('"')
    assert {c["digest"] for c in stack.calls()[before:]} == {content_digest(NEW)}
    sql = views.connect(str(tmp_path / "out"))
    (image,) = rows(sql, "images", new_etag)
    assert (image["status"], image["analyses"]) == ("analysed", list(ANALYSES))
    assert "Face" in {label["name"] for label in rows(sql, "labels", new_etag)}
    assert len(rows(sql, "faces", new_etag)) == 1
    assert "LOCAL STACK" in {t["detected_text"] for t in rows(sql, "text", new_etag)}


def test_with_versions_every_call_reads_the_listed_version_and_the_rows_describe_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    bucket = "pin-versioned"
    put = seed(stack, bucket, versioned=True)
    old_etag, old_version = put["ETag"].strip('"'), put["VersionId"]
    rewritten_at = run_rewriting_midway(stack, bucket, tmp_path)
    calls = target_calls(stack, bucket)
    assert len(calls) == len(ANALYSES)
    assert any(c["ts"] > rewritten_at for c in calls)  # the premise: a call came after the rewrite
    assert {(c["version"], c["digest"]) for c in calls} == {(old_version, content_digest(OLD))}
    assert all(c["version"] for c in stack.calls() if c["bucket"] == bucket)  # the other image's too
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["images"]["analysed"], summary["images"].get("changed", 0)) == (2, 0)
    sql = views.connect(str(tmp_path / "out"))
    (image,) = rows(sql, "images")
    assert (image["etag"], image["status"], image["analyses"]) == (old_etag, "analysed", list(ANALYSES))
    # Every analysis saw the box, none the face or the text of the new picture.
    assert {label["name"] for label in rows(sql, "labels", old_etag)} == {"Box"}
    assert rows(sql, "faces") == []
    assert rows(sql, "text") == []
    assert rows(sql, "errors") == []
