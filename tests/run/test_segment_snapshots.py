"""batch.run.commit.SegmentSnapshots: a segment's state snapshot is written in one background thread,
one at a time; a failure is a one-line warning; a run that ends stops the one still being written."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import commit_rows

from batch.run import faults
from batch.run.commit import SegmentSnapshots, write_snapshot
from batch.storage import snapshot
from batch.storage.commits import RunStore
from batch.storage.sink import Destination

pytest.importorskip("duckdb")

ROWS = {"images": [{"run_id": "r1", "bucket": "b", "key": "a.jpg", "etag": "e1", "status": "analysed"}]}
WARNING = "rekbatch: warning: state snapshot not written: "


def writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rekbatch-segment-snapshot"]


def test_one_snapshot_at_a_time_and_a_run_that_ends_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(Destination(str(tmp_path / "out")))
    commit_rows(store, "r1", ROWS, final=False)
    pause = tmp_path / "pause"
    pause.mkdir()
    monkeypatch.setenv(faults.SNAPSHOT_PAUSE, str(pause))  # the first snapshot takes 120 s
    with SegmentSnapshots(store) as background:
        background.start()
        assert len(writers()) == 1
        while not list(pause.iterdir()):
            assert writers(), "the snapshot ended before its pause"
            time.sleep(0.05)
        background.start()  # the next segment's: skipped, the next snapshot covers it
        assert len(writers()) == 1
    assert writers() == []  # stopped at once, not after the pause
    assert capsys.readouterr().err == ""  # the run says why it ended
    assert snapshot.snapshots(store) == []


def test_a_failed_background_snapshot_is_a_warning_and_the_final_one_waits_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(Destination(str(tmp_path / "out")))
    manifest = commit_rows(store, "r1", ROWS, final=False)
    (missing,) = manifest.files_of("images")
    moved = tmp_path / "moved.parquet"
    (tmp_path / "out" / missing.path).rename(moved)
    with SegmentSnapshots(store) as background:
        background.start()
        background.wait()
        (err,) = capsys.readouterr().err.splitlines()
        assert err.startswith(WARNING)
        assert missing.path in err
        moved.rename(tmp_path / "out" / missing.path)
        background.start()
        write_snapshot(store, after=background)  # the run's final snapshot: after the segment's
    assert capsys.readouterr().err == ""
    assert writers() == []
    assert len(snapshot.snapshots(store)) == 1
