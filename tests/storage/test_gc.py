"""batch.storage.gc: what no committed run lists goes, after the grace period; nothing else does."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import commit_rows

from batch.cli.main import main
from batch.core.manifest import AttemptRecord, data_file_name
from batch.core.tables import JOB_TABLES
from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.gc import collect_garbage, garbage
from batch.storage.sink import Destination, StoredFile, write_tables
from local_stack.stack import LocalStack

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
OLD, RECENT = NOW - timedelta(days=3), NOW - timedelta(hours=1)
CUTOFF = NOW - timedelta(hours=48)


def stored(path: str, when: datetime) -> StoredFile:
    return StoredFile(path, 1, when)


def test_garbage_is_old_unlisted_and_not_of_a_run_in_progress() -> None:
    files = [
        stored("labels/dt=d/r1-a1-000000.parquet", OLD),  # committed
        stored("labels/dt=d/r1-a2-000000.parquet", OLD),  # r1's losing attempt
        stored("_runs/r1/batch-1-000000.json", OLD),  # r1 is committed: its records are done with
        stored("labels/dt=d/r2-a1-000000.parquet", OLD),  # crashed long ago
        stored("labels/dt=d/r3-a1-000000.parquet", RECENT),  # still being written
        stored("labels/dt=d/r4-a1-000000.parquet", OLD),  # crashed, and being resumed now:
        stored("_runs/r4/attempt-2.json", RECENT),  # a fresh attempt record
        stored("labels/dt=d/_x.parquet", OLD),  # strays
        stored("labels/dt=d/.tmp-abc", OLD),
    ]
    doomed = garbage(files, {"labels/dt=d/r1-a1-000000.parquet"}, {"r1"}, CUTOFF)
    assert [f.path for f in doomed] == [
        "labels/dt=d/r1-a2-000000.parquet",
        "_runs/r1/batch-1-000000.json",
        "labels/dt=d/r2-a1-000000.parquet",
        "labels/dt=d/_x.parquet",
        "labels/dt=d/.tmp-abc",
    ]


def write_uncommitted(store: RunStore, run_id: str) -> str:
    (written,) = write_tables(
        store.destination,
        {"runs": [{"run_id": run_id}]},
        JOB_TABLES,
        dt="2026-11-25",
        name=data_file_name(run_id, 1, 0),
        compression="none",
        s3_client=store.s3_client,
    )
    return written.path


def test_gc_of_a_local_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(Destination(str(tmp_path)))
    committed = commit_rows(store, "r1", {"runs": [{"run_id": "r1"}]}).files[0].path
    crashed = write_uncommitted(store, "r2")
    fresh = write_uncommitted(store, "r3")
    (tmp_path / "notes.txt").write_text("not ours")
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    for path in (committed, crashed, "_commits/r1.json", "notes.txt"):
        os.utime(tmp_path / path, (three_days_ago, three_days_ago))

    assert main(["gc", "--output", str(tmp_path), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("gc: would delete 1 files")
    assert (tmp_path / crashed).exists()
    doomed = collect_garbage(store.destination, None, grace=timedelta(hours=48), now=datetime.now(UTC))
    assert [f.path for f in doomed] == [crashed]
    remaining = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert remaining == sorted([committed, fresh, "_commits/r1.json", "notes.txt"])


@pytest.mark.integration
def test_gc_of_an_s3_prefix_keeps_what_readers_read(local_stack: LocalStack) -> None:
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket="gc-out")
    store = RunStore(Destination("s3://gc-out/tables"), s3)
    commit_rows(store, "r1", {"runs": [{"run_id": "r1"}]})
    crashed = write_uncommitted(store, "r2")
    store.claim_attempt(AttemptRecord("r2", 1, NOW, "2026-11-25", "s3://in/p/", "d"))
    # Files are seconds old: a grace period of 0 and a clock an hour ahead make them old enough.
    doomed = collect_garbage(
        store.destination, s3, grace=timedelta(0), now=datetime.now(UTC) + timedelta(hours=1)
    )
    assert sorted(f.path for f in doomed) == ["_runs/r2/attempt-1.json", crashed]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="gc-out")["Contents"])
    assert keys == ["tables/_commits/r1.json", "tables/runs/dt=2026-11-25/r1-a1-000000.parquet"]
    with views.connect("s3://gc-out/tables", s3) as sql:
        assert sql.sql("SELECT run_id FROM runs").fetchall() == [("r1",)]
