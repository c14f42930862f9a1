"""batch.storage.snapshot: the snapshot written after each commit plans as every committed run's
`images` files read whole; a missing, corrupt or uncommitted snapshot is passed over; start-up reads
only the newest valid snapshot and the runs committed after it."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import COMMITTED_AT, commit_rows

from batch.core.manifest import Manifest
from batch.storage import snapshot
from batch.storage.commits import RunStore
from batch.storage.gc import collect_garbage
from batch.storage.readers import committed_state
from batch.storage.sink import Destination

pytest.importorskip("duckdb")

WANTED = {"labels": "L1", "faces": "F1"}
LISTING = [
    ("a.jpg", "e1"),
    ("b.jpg", "e2"),
    ("c.jpg", "e1"),
    ("d.jpg", "e1"),
    ("é.jpg", "e1"),
    ("z.jpg", "e1"),
]


def images(*rows: tuple[str, str, dict[str, str]]) -> dict[str, list[dict]]:
    return {
        "images": [
            {
                "run_id": "r",
                "bucket": "b",
                "key": key,
                "etag": etag,
                "status": "analysed",
                "analyses_done": [{"analysis": a, "settings_digest": d} for a, d in done.items()],
            }
            for key, etag, done in rows
        ]
    }


def commit(store: RunStore, run: int, *rows: tuple[str, str, dict[str, str]]) -> Manifest:
    at = COMMITTED_AT + timedelta(hours=run)
    manifest = commit_rows(store, f"r{run}", images(*rows), committed_at=at)
    snapshot.update_snapshot(store, store.manifests())
    return manifest


def history(store: RunStore) -> list[Manifest]:
    """New, changed (b.jpg's ETag), deleted (x.jpg, never listed again), settings changed (labels L0
    -> L1 for c.jpg), a key past ASCII (é.jpg), and a run with no images file."""
    return [
        commit(store, 1, ("a.jpg", "e1", WANTED), ("b.jpg", "e1", WANTED), ("c.jpg", "e1", {"labels": "L0"})),
        commit(
            store,
            2,
            ("x.jpg", "e1", WANTED),
            ("é.jpg", "e1", {"faces": "F1"}),
            ("c.jpg", "e1", {"faces": "F1"}),
        ),
        commit(store, 3, ("b.jpg", "e2", {"labels": "L1"}), ("é.jpg", "e1", {"labels": "L1"})),
        commit_rows(store, "r4", {}, committed_at=COMMITTED_AT + timedelta(hours=4)),
    ]


def plans(store: RunStore, manifests: list[Manifest]) -> list[tuple[str, ...]]:
    with ExitStack() as stack:
        state = snapshot.load_state(store, manifests, stack)
        state.unsettle("a.jpg", "e1", "faces")  # its faces were lost from the collection
        return [state.needed(key, etag, WANTED) for key, etag in LISTING]


def expected(store: RunStore, manifests: list[Manifest]) -> list[tuple[str, ...]]:
    state = committed_state(store, manifests)
    state.unsettle("a.jpg", "e1", "faces")
    return [state.needed(key, etag, WANTED) for key, etag in LISTING]


def test_the_snapshot_plans_as_every_committed_run_read_whole(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifests = history(store)
    assert plans(store, manifests) == expected(store, manifests)
    assert plans(store, manifests) == [
        ("faces",),
        ("faces",),
        ("labels",),
        ("labels", "faces"),
        (),
        ("labels", "faces"),
    ]
    assert snapshot.snapshots(store) == [
        snapshot.snapshot_path(3, "r3"),
        snapshot.snapshot_path(2, "r2"),
        snapshot.snapshot_path(1, "r1"),
    ]


def test_start_up_reads_only_the_newest_snapshot_and_the_runs_after_it(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifests = history(store)
    before = expected(store, manifests)
    later = commit_rows(
        store, "r5", images(("d.jpg", "e1", WANTED)), committed_at=COMMITTED_AT + timedelta(hours=5)
    )  # committed, no snapshot written after it (e.g. it failed)
    manifests.append(later)
    for manifest in manifests[:3]:  # the runs the snapshot covers: never read
        for entry in manifest.files_of("images"):
            (tmp_path / entry.path).unlink()
    assert plans(store, manifests) == [*before[:3], (), *before[4:]]


def test_a_corrupt_or_missing_snapshot_falls_back_to_an_older_one_or_to_every_run(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifests = history(store)
    want = expected(store, manifests)
    newest, older, oldest = (tmp_path / p for p in snapshot.snapshots(store))
    newest.write_bytes(newest.read_bytes()[:-20])  # truncated: its footer is gone
    assert plans(store, manifests) == want
    older.write_bytes(b"not parquet")
    assert plans(store, manifests) == want
    oldest.unlink()
    assert plans(store, manifests) == want


def test_a_snapshot_covering_a_run_not_committed_is_passed_over(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifests = history(store)
    # As if run r3's manifest were gone: the newest snapshot covers it, the older one does not.
    assert plans(store, manifests[:2]) == expected(store, manifests[:2])
    assert plans(store, manifests[:2]) != expected(store, manifests)


def test_the_next_snapshot_merges_the_runs_committed_since_the_newest_valid_one(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifests = history(store)
    (tmp_path / snapshot.snapshots(store)[0]).write_bytes(b"junk")
    manifests.append(commit(store, 5, ("d.jpg", "e1", WANTED)))
    assert snapshot.snapshots(store)[0] == snapshot.snapshot_path(5, "r5")
    for manifest in manifests:  # the new snapshot alone answers
        for entry in manifest.files_of("images"):
            (tmp_path / entry.path).rename(tmp_path / (entry.path + ".away"))
    got = plans(store, manifests)
    for manifest in manifests:
        for entry in manifest.files_of("images"):
            (tmp_path / (entry.path + ".away")).rename(tmp_path / entry.path)
    assert got == expected(store, manifests)


def test_gc_keeps_the_two_newest_snapshots_and_deletes_the_older_ones(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifests = history(store)
    want = expected(store, manifests)
    collect_garbage(store.destination, None, grace=timedelta(0), now=datetime.now(UTC) + timedelta(hours=1))
    assert snapshot.snapshots(store) == [snapshot.snapshot_path(3, "r3"), snapshot.snapshot_path(2, "r2")]
    assert plans(store, manifests) == want


def test_a_snapshot_written_after_a_segment_leaves_the_runs_next_segments_to_read(tmp_path: Path) -> None:
    """A long run's segments are manifests of their own: a snapshot taken after its first segment
    covers that segment only, and the images of its later segments and final commit still count."""
    store = RunStore(Destination(str(tmp_path)))
    for segment, final, key in ((1, False, "a.jpg"), (2, False, "c.jpg"), (3, True, "d.jpg")):
        rows = images((key, "e1", WANTED))
        at = COMMITTED_AT + timedelta(minutes=segment)
        commit_rows(store, "long", rows, committed_at=at, segment=segment, final=final)
        if segment == 1:
            snapshot.update_snapshot(store, store.manifests())
    manifests = store.manifests()
    assert len(manifests) == 3
    planned = plans(store, manifests)
    assert planned == expected(store, manifests)
    assert [planned[i] for i in (0, 2, 3)] == [("faces",), (), ()]  # a.jpg: its faces were lost


def test_a_cancelled_snapshot_update_writes_nothing(tmp_path: Path) -> None:
    """`Cancel` stops an update running in another thread (a run that ends while its segment's snapshot
    is written in the background): before its next step, DuckDB's merge at once; nothing is published."""
    store = RunStore(Destination(str(tmp_path)))
    commit_rows(store, "r1", images(("a.jpg", "e1", WANTED)))
    cancel = snapshot.Cancel()
    cancel()
    with pytest.raises(snapshot.SnapshotCancelled):
        snapshot.update_snapshot(store, store.manifests(), cancel)
    assert snapshot.snapshots(store) == []
    assert snapshot.update_snapshot(store, store.manifests()) is not None
