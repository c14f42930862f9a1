"""A run started on an output where another run has analysed images it has not committed says so on
stderr before its first call: a run stopped (SIGKILL) part-way, named with the command that finishes
it, and a run still going (a `--commit-every` backfill beside a nightly run). The new run still
analyses those images (the warning says so, and the endpoint's call log shows it); a run over an
output with no such run says nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image
from processes import STARTED, gone, wait_for, worker_processes

from batch.core.manifest import BatchRecord
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "others", "in/"
IMAGES = 32
SETTINGS = {
    "REKBATCH_DASK__N_WORKERS": "1",
    "REKBATCH_DASK__THREADS_PER_WORKER": "2",
    "REKBATCH_REKOGNITION__CALLS_IN_FLIGHT": "1",
    "REKBATCH_DASK__BATCH_SIZE": "4",
}
KEYS = [f"{PREFIX}{n:03d}.jpg" for n in range(IMAGES)]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--latency-ms", "150"]) as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        body = make_image(size=(120, 100), rects=(("box", (10, 10, 40, 40)),))
        for key in KEYS:
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield local


def rekbatch(stack: LocalStack, tmp: Path, *args: str, **settings: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "batch", "run", "--output", str(tmp / "out"), "--config",
               str(ROOT / "configs" / "local.toml"), "--input", f"s3://{BUCKET}/{PREFIX}",
               "--analyses", "labels", *args]  # fmt: skip
    return subprocess.Popen(
        command, env={**os.environ, **stack.env, **SETTINGS, **settings}, cwd=tmp, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def logged(stack: LocalStack) -> list[dict[str, Any]]:
    text = stack.call_log.read_text(encoding="utf-8") if stack.call_log.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def batch_records(out: Path, run_id: str) -> list[BatchRecord]:
    folder = out / "_runs" / run_id
    return [BatchRecord.from_json(p.read_text()) for p in sorted(folder.glob("batch-*.json"))]


def warnings_of(stderr: str) -> list[str]:
    """The warning lines a run printed before it claimed its attempt (before any call)."""
    lines = stderr.splitlines()
    started = next(n for n, line in enumerate(lines) if STARTED.search(line))
    assert not any(" warning: run " in line for line in lines[started:]), stderr
    return [line for line in lines[:started] if line.startswith("rekbatch: warning: run ")]


def test_a_run_after_one_stopped_part_way_names_it_and_how_to_finish_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = rekbatch(stack, tmp_path, "--run-id", "backfill")
    workers = wait_for(lambda: worker_processes(job.pid))
    try:
        wait_for(lambda: len(batch_records(out, "backfill")) >= 2)
        os.kill(job.pid, signal.SIGKILL)
        assert job.wait() == -signal.SIGKILL
    finally:
        if job.poll() is None:
            job.kill()
        job.communicate()
        wait_for(lambda: all(gone(w) for w in workers), timeout=30)
    done = {image.key for record in batch_records(out, "backfill") for image in record.images}
    assert 8 <= len(done) < IMAGES, "the run was not killed part-way"
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).timestamp()  # stopped, not running
    for path in (out / "_runs" / "backfill").iterdir():
        os.utime(path, (an_hour_ago, an_hour_ago))

    since = time.time()  # calls of the killed run in flight may still be logged: they arrived before
    code, stderr = finish(rekbatch(stack, tmp_path, "--run-id", "nightly-1"))
    assert code == 0, stderr
    command = f"rekbatch run --output {out} --config {ROOT / 'configs' / 'local.toml'}"
    assert warnings_of(stderr) == [
        "rekbatch: warning: run backfill stopped on this output with images analysed and not committed: "
        "this run analyses (and pays for) them again, unless another run committed them; finish it before "
        "the next run with: "
        f"{command} --input s3://{BUCKET}/{PREFIX} --analyses labels --resume backfill"
    ]
    # What the warning says: the images the stopped run analysed are called again by this one.
    called = Counter(c["name"] for c in logged(stack) if c["ts"] >= since and c["outcome"] == "ok")
    assert called == Counter(dict.fromkeys(KEYS, 1))
    assert done <= set(called)


def test_a_run_beside_a_running_backfill_names_it(stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # One call a second: the backfill is still going when the nightly run starts, whatever the load.
    backfill = rekbatch(
        stack, tmp_path, "--run-id", "backfill", "--commit-every", "4images", "--tps", "1",
        REKBATCH_DASK__SHUTDOWN_GRACE_SECONDS="1",  # the SIGTERM at the end cancels what is in flight
    )  # fmt: skip
    try:
        wait_for(lambda: len(list((out / "_commits").glob("backfill@*.json"))) >= 1)
        code, stderr = finish(rekbatch(stack, tmp_path, "--run-id", "nightly", "--limit", "4"))
        assert code == 0, stderr
        lines = warnings_of(stderr)
        assert len(lines) == 1, stderr
        assert lines[0].startswith("rekbatch: warning: run backfill is running on this output (")
        assert lines[0].endswith(
            "): images it has not committed are analysed again by this run, unless another run committed them"
        )
    finally:
        backfill.send_signal(signal.SIGTERM)
        code, stderr = finish(backfill)
    assert code == 128 + signal.SIGTERM, stderr
    assert warnings_of(stderr) == []  # it started alone
