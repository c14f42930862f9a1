"""batch.storage.commits: the files of a manifest that are missing, and a running attempt's heartbeat."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import commit_rows

from batch.core.manifest import heartbeat_path
from batch.storage.commits import Heartbeat, RunStore
from batch.storage.sink import Destination


def test_missing_finds_deleted_and_rewritten_files(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifest = commit_rows(
        store,
        "r1",
        {table: [{"run_id": "r1", "key": "a.jpg"}] for table in ("images", "labels", "errors")},
    )
    assert store.missing(manifest.files) == []
    (images,), (labels,) = manifest.files_of("images"), manifest.files_of("labels")
    (tmp_path / images.path).unlink()
    (tmp_path / labels.path).write_bytes(b"not the committed file")
    assert store.missing(manifest.files) == [images, labels]


def test_a_heartbeat_is_rewritten_until_its_attempt_ends(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    path = tmp_path / heartbeat_path("r1", 2)
    with Heartbeat(store, "r1", 2, interval=0.01) as heartbeat:
        assert path.exists()  # the first beat, before the block runs
        deadline = time.monotonic() + 60
        while heartbeat.beats < 3:
            assert time.monotonic() < deadline, "the heartbeat stopped beating"
            time.sleep(0.01)
    last = json.loads(path.read_text())
    assert (last["run_id"], last["attempt"], last["beat"]) == ("r1", 2, heartbeat.beats)
    beats = heartbeat.beats
    time.sleep(0.05)
    assert (heartbeat.beats, json.loads(path.read_text())["beat"]) == (beats, beats)  # stopped


def test_a_runs_segments_and_final_manifest_are_each_created_once_and_read_as_the_run(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from batch.core.manifest import Manifest

    def manifest(run_id: str, segment: int, final: bool) -> Manifest:
        now = datetime.now(UTC)
        return Manifest(
            run_id,
            1,
            (1,),
            now,
            now,
            "2026-12-07",
            "s3://b/p/",
            "d",
            {},
            (),
            {},
            segment=segment,
            final=final,
        )

    store = RunStore(Destination(str(tmp_path)))
    assert store.commit(manifest("r", 1, False))
    assert not store.commit(manifest("r", 1, False))  # create-only: a second attempt loses the race
    assert store.commit(manifest("r", 2, False))
    assert store.manifest("r") is None  # not committed: segments alone
    assert store.commit(manifest("r-2", 1, True))
    assert store.commit(manifest("r", 3, True))
    assert [(m.segment, m.final) for m in store.run_manifests("r")] == [(1, False), (2, False), (3, True)]
    assert store.manifest("r") == store.run_manifests("r")[-1]
    assert sorted(m.path for m in store.manifests()) == [
        "_commits/r-2.json", "_commits/r.json", "_commits/r@000001.json", "_commits/r@000002.json"
    ]  # fmt: skip
