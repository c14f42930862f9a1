"""batch.storage.gc: what no committed run lists goes, after the grace period; nothing else does."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import commit_rows
from hypothesis import given
from hypothesis import strategies as st

from batch.cli.main import main
from batch.core.manifest import (
    HEARTBEAT_SECONDS,
    LIVE_SECONDS,
    AttemptRecord,
    data_file_name,
    heartbeat_path,
    run_of_control_file,
    run_of_data_file,
)
from batch.core.tables import JOB_TABLES
from batch.query import views
from batch.storage.commits import Heartbeat, RunStore
from batch.storage.gc import collect_garbage, garbage, live_runs
from batch.storage.sink import Destination, StoredFile, write_tables
from local_stack.stack import LocalStack

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
OLD, RECENT = NOW - timedelta(days=3), NOW - timedelta(hours=1)
CUTOFF = NOW - timedelta(hours=48)
LIVE_SINCE = NOW - timedelta(seconds=LIVE_SECONDS)


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
    doomed = garbage(files, {"labels/dt=d/r1-a1-000000.parquet"}, {"r1"}, CUTOFF, LIVE_SINCE)
    assert [f.path for f in doomed] == [
        "labels/dt=d/r1-a2-000000.parquet",
        "_runs/r1/batch-1-000000.json",
        "labels/dt=d/r2-a1-000000.parquet",
        "labels/dt=d/_x.parquet",
        "labels/dt=d/.tmp-abc",
    ]


def test_a_live_run_keeps_every_file_whatever_the_grace_period() -> None:
    beat = NOW - timedelta(seconds=HEARTBEAT_SECONDS / 2)
    files = [
        stored("_runs/r5/attempt-1.json", OLD),  # r5 runs now: its heartbeat is fresh
        stored("_runs/r5/heartbeat-1.json", beat),
        stored("labels/dt=d/r5-a1-000000.parquet", NOW - timedelta(minutes=5)),
        stored("_runs/r5/batch-1-000000.json", NOW - timedelta(minutes=5)),
        stored("_runs/r6/attempt-2.json", RECENT),  # r6 is resumed now: no heartbeat yet, a fresh record
        stored("labels/dt=d/r6-a1-000000.parquet", OLD),
        stored("_runs/r1/heartbeat-2.json", beat),  # r1 is committed; its attempt 2 still runs
        stored("labels/dt=d/r1-a2-000000.parquet", RECENT),
        stored("_runs/r7/heartbeat-1.json", NOW - timedelta(seconds=2 * LIVE_SECONDS)),  # r7 died
        stored("labels/dt=d/r7-a1-000000.parquet", OLD),
    ]
    # A grace period of 0: only a live run keeps what it wrote.
    doomed = garbage(files, set(), {"r1"}, NOW, LIVE_SINCE)
    assert [f.path for f in doomed] == [
        "_runs/r6/attempt-2.json",
        "labels/dt=d/r6-a1-000000.parquet",
        "_runs/r7/heartbeat-1.json",
        "labels/dt=d/r7-a1-000000.parquet",
    ]
    assert live_runs(files, LIVE_SINCE) == {"r1", "r5"}
    # With the default grace period, r6 (resumed now) and r7 (died minutes ago) keep theirs for a resume.
    assert garbage(files, set(), {"r1"}, CUTOFF, LIVE_SINCE) == []


def test_a_run_with_segments_keeps_its_control_files_past_the_grace_period() -> None:
    files = [
        stored("labels/dt=d/r8-a1-000000.parquet", OLD),  # in r8's segment
        stored("labels/dt=d/r8-a1-000001.parquet", OLD),  # complete, not in a segment yet
        stored("_runs/r8/attempt-1.json", OLD),
        stored("_runs/r8/batch-1-000000.json", OLD),
        stored("_runs/r8/heartbeat-1.json", OLD),
        stored("_runs/r2/attempt-1.json", OLD),  # a crashed run without segments
    ]
    committed = {"labels/dt=d/r8-a1-000000.parquet"}
    doomed = garbage(files, committed, set(), CUTOFF, LIVE_SINCE, unfinished_runs={"r8"})
    # --resume r8 needs its attempt and batch records; the unlisted batch goes as a crashed run's.
    assert [f.path for f in doomed] == ["labels/dt=d/r8-a1-000001.parquet", "_runs/r2/attempt-1.json"]


run_names = st.sampled_from(["r1", "r2", "r3"])
ages = st.integers(0, 4 * 24 * 3600).map(lambda s: NOW - timedelta(seconds=s))
stored_files = st.lists(
    st.builds(
        stored,
        st.one_of(
            st.builds(
                "labels/dt=d/{}-a{}-{:06d}.parquet".format, run_names, st.integers(1, 2), st.integers(0, 2)
            ),
            st.builds(
                "_runs/{}/{}-{}.json".format,
                run_names,
                st.sampled_from(["attempt", "heartbeat", "batch"]),
                st.integers(1, 2),
            ),
            st.just("labels/dt=d/_stray.parquet"),
        ),
        ages,
    ),
    unique_by=lambda f: f.path,
)


@given(stored_files, st.sets(run_names), st.integers(0, 72).map(lambda h: NOW - timedelta(hours=h)))
def test_gc_never_takes_a_committed_file_a_young_file_or_a_file_of_a_live_run(
    files: list[StoredFile], committed_runs: set[str], cutoff: datetime
) -> None:
    committed = {f.path for f in files if f.path.endswith("000000.parquet")}
    live = live_runs(files, LIVE_SINCE)
    for f in garbage(files, committed, committed_runs, cutoff, LIVE_SINCE):
        assert f.path not in committed
        assert f.modified < cutoff
        assert (run_of_control_file(f.path) or run_of_data_file(f.path)) not in live


def test_gc_refuses_a_grace_period_under_an_hour_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(Destination(str(tmp_path)))
    crashed = write_uncommitted(store, "r2")
    running = write_uncommitted(store, "r3")
    with Heartbeat(store, "r3", 1):  # r3's attempt runs while gc does
        assert main(["gc", "--output", str(tmp_path), "--older-than", "0.5"]) == 2
        assert capsys.readouterr().err.strip() == (
            "rekbatch: error: --older-than 0.5: under 1 hour, a crashed run's files go before it can be "
            "resumed; add --force to delete them anyway (running attempts keep theirs)"
        )
        assert (tmp_path / crashed).exists()
        assert main(["gc", "--output", str(tmp_path), "--older-than", "0", "--force"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [
        f"gc: deleted 1 files ({(tmp_path / running).stat().st_size} bytes) under {tmp_path}",
        "gc: kept every file of the runs active in the last 2 minutes: r3",
    ]
    assert not (tmp_path / crashed).exists()
    assert (tmp_path / running).exists()
    assert (tmp_path / heartbeat_path("r3", 1)).exists()


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
    collected = collect_garbage(store.destination, None, grace=timedelta(hours=48), now=datetime.now(UTC))
    assert ([f.path for f in collected.doomed], collected.live_runs) == ([crashed], [])
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
    collected = collect_garbage(
        store.destination, s3, grace=timedelta(0), now=datetime.now(UTC) + timedelta(hours=1)
    )
    assert sorted(f.path for f in collected.doomed) == ["_runs/r2/attempt-1.json", crashed]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="gc-out")["Contents"])
    assert keys == ["tables/_commits/r1.json", "tables/runs/dt=2026-11-25/r1-a1-000000.parquet"]
    with views.connect("s3://gc-out/tables", s3) as sql:
        assert sql.sql("SELECT run_id FROM runs").fetchall() == [("r1",)]


def test_a_run_with_segments_only_is_not_committed_its_unlisted_files_wait_for_its_resume(
    tmp_path: Path,
) -> None:
    from batch.core.manifest import FileEntry, Manifest

    store = RunStore(Destination(str(tmp_path)))
    in_segment, after_it = write_uncommitted(store, "r4"), "runs/dt=2026-11-25/r4-a1-000001.parquet"
    (tmp_path / after_it).write_bytes((tmp_path / in_segment).read_bytes())
    entry = FileEntry("runs", in_segment, 1, "x", (tmp_path / in_segment).stat().st_size)
    segment = Manifest(
        "r4", 1, (1,), NOW, NOW, "2026-11-25", "s3://in/p/", "d", {}, (entry,), {}, segment=1, final=False
    )
    assert store.commit(segment)
    store.claim_attempt(AttemptRecord("r4", 1, NOW, "2026-11-25", "s3://in/p/", "d"))
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    for path in (in_segment, after_it):
        os.utime(tmp_path / path, (three_days_ago, three_days_ago))
    # An hour later: the run is not live, but its attempt is younger than the grace period.
    later = datetime.now(UTC) + timedelta(hours=1)
    collected = collect_garbage(store.destination, None, grace=timedelta(hours=48), now=later)
    assert collected.doomed == []
    assert (tmp_path / after_it).exists()
    # Days later: the batch no segment lists goes; the run's records stay, for its --resume.
    days_later = datetime.now(UTC) + timedelta(days=3)
    collected = collect_garbage(store.destination, None, grace=timedelta(hours=48), now=days_later)
    assert [f.path for f in collected.doomed] == [after_it]
    assert store.attempts("r4") != []
