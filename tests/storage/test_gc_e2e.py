"""Files deleted under a running attempt: gc leaves a live run alone, and a commit never lists a file
that is gone.

The CLI runs as a subprocess on the local stack. The driver is held just before its commit
(`TEST_REKBATCH_COMMIT_BARRIER`), every data file of the run written, while the test runs
`rekbatch gc --older-than 0 --force` or deletes files itself (by hand, a lifecycle rule); then it is let go.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_image, wait_for
from processes import one_line

from batch.core.manifest import AttemptRecord, data_file_name
from batch.core.tables import JOB_TABLES
from batch.query import views
from batch.run import faults
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, write_tables
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "live-output"
BOX = (("box", (20, 20, 60, 60)),)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--latency-ms", "20"]) as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        yield local


def upload(stack: LocalStack, prefix: str, count: int) -> list[str]:
    keys = [f"{prefix}{n:02d}.jpg" for n in range(count)]
    s3 = stack.s3_client()
    for n, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=make_image(size=(160 + n % 7, 120), rects=BOX))
    return keys


def rekbatch(
    stack: LocalStack, tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`rekbatch ARGS` with the local stack's environment, one worker and no report."""
    environment = {
        **os.environ,
        **stack.env,
        "REKBATCH_DASK__N_WORKERS": "1",
        "REKBATCH_REPORT__ENABLED": "false",
    }
    command = [sys.executable, "-m", "batch", *args]
    return subprocess.Popen(
        command,
        env={**environment, **(env or {})},
        cwd=tmp,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_args(tmp: Path, prefix: str, *args: str) -> list[str]:
    return ["run", "--config", str(ROOT / "configs" / "local.toml"), "--input", f"s3://{BUCKET}/{prefix}",
            "--output", str(tmp / "out"), "--analyses", "labels", "--summary-json", str(tmp / "summary.json"),
            *args]  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


@contextlib.contextmanager
def held_at_commit(stack: LocalStack, tmp: Path, prefix: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A run started and held just before its commit; let go when the block ends (killed if the block
    failed), so a failing test leaves no run waiting."""
    barrier = tmp / "barrier"
    barrier.mkdir()
    job = rekbatch(stack, tmp, *run_args(tmp, prefix, *args), env={faults.COMMIT_BARRIER: str(barrier)})
    try:
        wait_for(lambda: any(barrier.iterdir()) or job.poll() is not None)
        assert job.poll() is None, job.communicate()
        yield job
    except BaseException:
        job.kill()
        job.communicate()
        raise
    finally:
        (barrier / "release").touch()


def committed_keys(tmp: Path) -> Counter[str]:
    with views.connect(str(tmp / "out")) as sql:
        return Counter(key for (key,) in sql.sql("SELECT key FROM images").fetchall())


def test_gc_during_a_live_run_takes_only_what_no_live_run_wrote(stack: LocalStack, tmp_path: Path) -> None:
    keys = upload(stack, "live/", 16)
    store = RunStore(Destination(str(tmp_path / "out")))
    # A run that crashed three days ago: its files are garbage.
    (crashed,) = write_tables(store.destination, {"runs": [{"run_id": "old-1"}]}, JOB_TABLES, dt="2026-11-25",
                              name=data_file_name("old-1", 1, 0), compression="none")  # fmt: skip
    record = store.claim_attempt(AttemptRecord("old-1", 1, datetime.now(UTC), "2026-11-25", "s3://x/", "d"))
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    for path in (crashed.path, f"_runs/old-1/attempt-{record.attempt}.json"):
        os.utime(tmp_path / "out" / path, (three_days_ago, three_days_ago))

    out = tmp_path / "out"
    with held_at_commit(stack, tmp_path, "live/", "--run-id", "night-1") as job:
        assert (out / "_runs" / "night-1" / "heartbeat-1.json").exists()
        gc = ("gc", "--output", str(out), "--older-than", "0", "--force")
        code, stdout, stderr = finish(rekbatch(stack, tmp_path, *gc))
        assert code == 0, stderr
        assert stdout.splitlines() == [
            f"deleted {out / crashed.path}",
            f"deleted {out}/_runs/old-1/attempt-1.json",
            f"gc: deleted 2 files ({crashed.size_bytes + len(record.to_json())} bytes) under {out}",
            "gc: kept every file of the runs active in the last 2 minutes: night-1",
        ]
    code, _, stderr = finish(job)
    assert code == 0, stderr
    assert committed_keys(tmp_path) == Counter(keys)
    code, stdout, stderr = finish(
        rekbatch(stack, tmp_path, "sql", "--output", str(out), "-c", "SELECT count(*) AS n FROM labels")
    )
    assert (code, stderr) == (0, "")
    assert re.search(r"\b16\b", stdout)


def test_files_deleted_before_the_commit_abort_it_and_resume_writes_them_again(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = upload(stack, "gone/", 16)
    out = tmp_path / "out"
    with held_at_commit(stack, tmp_path, "gone/", "--run-id", "night-2") as job:
        runs = out / "_runs" / "night-2"
        records = [json.loads((runs / f"batch-1-{n:06d}.json").read_text()) for n in (1, 2)]
        lost = {image[0] for record in records for image in record["images"]}
        deleted = [out / f["path"] for record in records for f in record["files"]]
        for path in deleted:
            path.unlink()
    code, _, stderr = finish(job)
    assert code == 4, stderr
    reason = one_line(stderr)
    files = len(list(out.glob("*/dt=*/night-2-a1-*.parquet"))) + len(deleted)  # with the runs row's two
    assert reason == (
        f"rekbatch: error: run night-2 aborted, nothing committed: {len(deleted)} of its {files} files are "
        f"missing or changed (first: {deleted[0]}); --resume night-2 writes them again"
    )
    store = RunStore(Destination(str(out)))
    assert store.manifests() == []
    assert json.loads((tmp_path / "summary.json").read_text())["exit_code"] == 4

    before = len(stack.calls())
    code, _, stderr = finish(rekbatch(stack, tmp_path, *run_args(tmp_path, "gone/", "--resume", "night-2")))
    assert code == 0, stderr
    # The images whose batch lost its files are written again from their own records: nothing is paid
    # twice, and every image is committed once, the lost ones included.
    assert stack.calls()[before:] == []
    assert committed_keys(tmp_path) == Counter(keys)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kept_images"] >= len(lost)
    assert summary["repeated_calls"] == []
    (manifest,) = store.manifests()
    for entry in manifest.files:
        assert hashlib.sha256((out / entry.path).read_bytes()).hexdigest() == entry.sha256, entry.path
