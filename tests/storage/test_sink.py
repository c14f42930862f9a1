from __future__ import annotations

import hashlib
import resource
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batch.core.tables import ERRORS_SCHEMA
from batch.storage.sink import Destination, write_tables
from local_stack.stack import LocalStack


def error_row(key: str) -> dict:
    return {
        "run_id": "r1",
        "bucket": "b",
        "key": key,
        "etag": "e",
        "analysis": "labels",
        "operation": "DetectLabels",
        "error_code": "InvalidImageFormatException",
        "message": "m",
        "attempts": 1,
        "retryable": False,
    }


def test_local_files_are_named_by_run_and_batch_never_by_key(tmp_path: Path) -> None:
    rows = [error_row("../../etc/passwd.jpg"), error_row("_hidden=1/.x.jpg")]
    written = write_tables(
        Destination(str(tmp_path)),
        {"errors": rows, "labels": []},
        {"errors": ERRORS_SCHEMA},
        dt="2026-11-25",
        name="r1-000003",
        compression="zstd",
    )
    assert [w.table for w in written] == ["errors"]  # no file for a table without rows
    path = tmp_path / "errors" / "dt=2026-11-25" / "r1-000003.parquet"
    assert written[0].path == "errors/dt=2026-11-25/r1-000003.parquet"
    assert (written[0].rows, written[0].size_bytes) == (2, path.stat().st_size)
    assert written[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["r1-000003.parquet"]
    table = pq.read_table(path)
    assert table.schema.equals(ERRORS_SCHEMA)
    assert table.column("key").to_pylist() == ["../../etc/passwd.jpg", "_hidden=1/.x.jpg"]


def test_rewriting_the_same_batch_replaces_its_file(tmp_path: Path) -> None:
    destination = Destination(str(tmp_path))
    for keys in (["a.jpg", "b.jpg"], ["a.jpg"]):
        write_tables(
            destination,
            {"errors": [error_row(k) for k in keys]},
            {"errors": ERRORS_SCHEMA},
            dt="2026-11-25",
            name="r1-000000",
            compression="none",
        )
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 1
    assert pq.read_table(files[0]).num_rows == 1


def race_to_create(destination: Destination, s3_client: Any = None) -> tuple[list[bool], bytes | None]:
    """Eight threads create the same file with different bodies: (who succeeded, what the file holds)."""
    bodies = [f"attempt {n}".encode() for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(lambda body: destination.create("_commits/r1.json", body, s3_client), bodies))
    return won, destination.read("_commits/r1.json", s3_client)


def test_a_local_create_has_exactly_one_winner(tmp_path: Path) -> None:
    won, body = race_to_create(Destination(str(tmp_path)))
    assert won.count(True) == 1
    assert body == f"attempt {won.index(True)}".encode()
    assert [p.name for p in (tmp_path / "_commits").iterdir()] == ["r1.json"]  # no temp file left


@pytest.mark.integration
def test_an_s3_create_has_exactly_one_winner(local_stack: LocalStack) -> None:
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket="sink-out")
    won, body = race_to_create(Destination("s3://sink-out/prefix"), s3)
    assert won.count(True) == 1
    assert body == f"attempt {won.index(True)}".encode()


def test_a_write_that_fails_part_way_leaves_nothing(tmp_path: Path) -> None:
    destination = Destination(str(tmp_path))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, limit[1]))  # like a disk filling up mid-write
    try:
        with pytest.raises(OSError, match="File too large"):
            destination.publish("labels/dt=x/r1-a1-000000.parquet", b"x" * 5000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
