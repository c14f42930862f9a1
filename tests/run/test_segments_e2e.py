"""A long run publishes as it goes (`--commit-every`), and a crash loses nothing and repeats nothing.

A run on the local stack (the endpoint answers after 100 ms, so the run lasts long enough to be killed
part-way) commits a segment every 8 images; once two segments are committed its driver is killed with
SIGKILL. While it is down, `rekbatch sql` and `rekbatch files` show the segments' rows and files, and no
`runs` row. `--resume` finishes it: every table then has each image's rows once, the manifests' counts
add up to the run's, the bill is the endpoint's call log, and the next run calls nothing. A segment's
state snapshot (minutes at 10M keys) is written while the batches go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import make_image
from processes import gone, wait_for, worker_processes

from batch.core.errors import RunNotFound
from batch.core.manifest import Manifest
from batch.query import views
from batch.report.data import load_run
from batch.run import faults
from batch.storage.commits import RunStore
from batch.storage.sink import Destination
from batch.storage.snapshot import covered_id, snapshots
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "segments", "in/"
IMAGES = 64
ANALYSES = {"labels": "DetectLabels", "text": "DetectText"}
WORKERS, THREADS, IN_FLIGHT = 1, 2, 1
SETTINGS = {
    "REKBATCH_DASK__N_WORKERS": str(WORKERS),
    "REKBATCH_DASK__THREADS_PER_WORKER": str(THREADS),
    "REKBATCH_REKOGNITION__CALLS_IN_FLIGHT": str(IN_FLIGHT),
    "REKBATCH_DASK__BATCH_SIZE": "4",
}
KEYS = [f"{PREFIX}{n:03d}.jpg" for n in range(IMAGES)]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--latency-ms", "100"]) as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        body = make_image(size=(120, 100), rects=(("box", (10, 10, 40, 40)), ("text", (60, 10, 50, 20))))
        for key in KEYS:
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield local


def rekbatch(
    stack: LocalStack, tmp: Path, command: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    if command == "run":
        config = str(ROOT / "configs" / "local.toml")
        args = ("--config", config, "--input", f"s3://{BUCKET}/{PREFIX}", "--analyses", ",".join(ANALYSES),
                "--summary-json", str(tmp / "summary.json"), *args)  # fmt: skip
    environment = {**os.environ, **stack.env, **SETTINGS, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "batch", command, "--output", str(tmp / "out"), *args],
        env=environment,
        cwd=tmp,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def ok_calls(stack: LocalStack, since: int) -> Counter[tuple[str, str]]:
    """Successful (billed) calls the endpoint logged since its `since`-th call, by (operation, key)."""
    return Counter((c["operation"], c["name"]) for c in logged(stack)[since:] if c["outcome"] == "ok")


def logged(stack: LocalStack) -> list[dict[str, Any]]:
    text = stack.call_log.read_text(encoding="utf-8") if stack.call_log.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def manifests(out: Path) -> list[Manifest]:
    folder = out / "_commits"
    paths = sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.exists() else []
    return [Manifest.from_json(p.read_text()) for p in paths]


def paid(calls: list[dict[str, Any]], outcome: str | None = None) -> int:
    wanted = (outcome,) if outcome else ("ok", "in-flight")
    return sum(c["count"] for c in calls if c["outcome"] in wanted)


def test_a_run_killed_after_two_segments_shows_them_and_resumes_without_a_repeat(
    stack: LocalStack, tmp_path: Path
) -> None:
    out, since = tmp_path / "out", len(logged(stack))
    job = rekbatch(stack, tmp_path, "run", "--run-id", "seg-1", "--commit-every", "8images")
    workers = wait_for(lambda: len(w := worker_processes(job.pid)) == WORKERS and w)
    try:
        wait_for(lambda: len(manifests(out)) >= 2)
        os.kill(job.pid, signal.SIGKILL)
        assert job.wait() == -signal.SIGKILL
    finally:
        if job.poll() is None:
            job.kill()
        job.communicate()
        wait_for(lambda: all(gone(w) for w in workers), timeout=30)  # they exit when their parent dies

    # While the run is down, readers see its segments: their rows, their files, no runs row yet.
    segments = manifests(out)
    assert len(segments) >= 2
    assert not any(m.final for m in segments)
    assert [m.segment for m in segments] == list(range(1, len(segments) + 1))
    done = sum(m.counts["analysed"] for m in segments)
    assert 8 <= done < IMAGES, f"{done} images in the segments: the run was not killed part-way"
    query = (
        "SELECT 'rows=' || count(*) || ' keys=' || count(DISTINCT key) FROM images; "
        "SELECT 'runs=' || count(*) FROM runs"
    )
    code, shown, stderr = finish(rekbatch(stack, tmp_path, "sql", "-c", query))
    assert code == 0, stderr
    assert f"rows={done} keys={done}" in shown
    assert "runs=0" in shown
    with pytest.raises(RunNotFound, match=f"{len(segments)} segments committed so far"):
        load_run(str(out), "seg-1")  # the report comes with the runs row, at the final commit
    code, listed, stderr = finish(rekbatch(stack, tmp_path, "files", "images"))
    assert code == 0, stderr
    assert sorted(listed.split()) == sorted(str(out / f.path) for m in segments for f in m.files_of("images"))

    code, _, stderr = finish(
        rekbatch(stack, tmp_path, "run", "--resume", "seg-1", "--commit-every", "8images")
    )
    assert code == 0, stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    run_manifests = manifests(out)
    assert (summary["status"], summary["images"]["analysed"]) == ("completed", IMAGES)
    assert summary["segments"] == len(run_manifests)
    assert [m.final for m in run_manifests].count(True) == 1
    # Each image's rows once in every table; the manifests' counts add up to the run's.
    with views.connect(str(out)) as sql:
        for table, rows_per_image in (("images", 1), ("text", 3)):  # a LINE and its two WORDs
            found = dict(sql.sql(f"SELECT key, count(*) FROM {table} GROUP BY key").fetchall())
            assert found == dict.fromkeys(KEYS, rows_per_image), table
        labels = sql.sql("SELECT key, name, count(*) FROM labels GROUP BY ALL").fetchall()
        assert {key for key, _, _ in labels} == set(KEYS)
        assert {n for _, _, n in labels} == {1}
        ((runs, segments_column, calls),) = sql.sql(
            "SELECT count(*), any_value(segments), any_value(calls) FROM runs"
        ).fetchall()
    assert (runs, segments_column) == (1, len(run_manifests))
    # The report reads every manifest of the run.
    assert sum(rows.num_rows for _, rows in load_run(str(out), "seg-1").scan("images")) == IMAGES
    totals = sum((Counter(m.counts) for m in run_manifests), Counter())
    assert (totals["listed"], totals["analysed"]) == (IMAGES, IMAGES)
    # The bill is the endpoint's: each image called once per analysis but the calls in flight at the kill.
    called = ok_calls(stack, since)
    assert set(called) == {(operation, key) for operation in ANALYSES.values() for key in KEYS}
    repeats, bill = sum(n - 1 for n in called.values()), paid(summary["calls"])
    ceiling = WORKERS * THREADS * IN_FLIGHT
    assert repeats <= ceiling
    assert 0 <= bill - called.total() <= paid(summary["calls"], "in-flight")
    assert paid(summary["repeated_calls"]) - (bill - called.total()) == repeats
    assert sorted(calls, key=str) == sorted(summary["calls"], key=str)

    # The next run finds everything settled: no call.
    before = len(logged(stack))
    code, _, stderr = finish(rekbatch(stack, tmp_path, "run", "--commit-every", "8images"))
    assert code == 0, stderr
    assert len(logged(stack)) == before
    assert json.loads((tmp_path / "summary.json").read_text())["images"]["unchanged"] == IMAGES


def test_a_segment_snapshot_is_written_while_the_batches_go_on(stack: LocalStack, tmp_path: Path) -> None:
    """The first segment's snapshot takes 20 s (the fault). It used to run in the driver's
    result loop: nothing was submitted meanwhile, the endpoint got only the calls of the batches already
    in flight (at most a window of batches: 4 of 4 images). Now it runs in the background: most of the
    run's images are called during it, the later segments' snapshots are skipped, and the final one,
    written once it is done, covers every segment. Each image is billed once, readers see every row."""
    pause_seconds, window_images = 20.0, 2 * WORKERS * THREADS * 4  # 2 x threads batches of 4 in flight
    out, pause, since = tmp_path / "out", tmp_path / "pause", len(logged(stack))
    pause.mkdir()
    fault = {faults.SNAPSHOT_PAUSE: str(pause), faults.SNAPSHOT_PAUSE_SECONDS: str(pause_seconds)}
    job = rekbatch(stack, tmp_path, "run", "--run-id", "bg-1", "--commit-every", "8images", env=fault)
    code, _, stderr = finish(job)
    assert code == 0, stderr
    assert "state snapshot not written" not in stderr

    (marker,) = pause.iterdir()
    began = marker.stat().st_mtime
    during = {c["name"] for c in logged(stack)[since:] if began < c["ts"] < began + pause_seconds}
    assert len(during) > window_images, f"{len(during)} images called during the segment's snapshot"
    assert ok_calls(stack, since) == Counter({(op, key): 1 for op in ANALYSES.values() for key in KEYS})
    with views.connect(str(out)) as sql:
        found = dict(sql.sql("SELECT key, count(*) FROM images GROUP BY key").fetchall())
    assert found == dict.fromkeys(KEYS, 1)
    run_manifests = manifests(out)
    assert len(run_manifests) > 2
    newest = pq.ParquetFile(out / snapshots(RunStore(Destination(str(out))))[0])
    covers = json.loads((newest.schema_arrow.metadata or {})[b"covers"])
    assert sorted(covers) == sorted(covered_id(m) for m in run_manifests)
