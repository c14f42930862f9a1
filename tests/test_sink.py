from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from batch.sink import Destination, write_tables
from batch.tables import ERRORS_SCHEMA


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
