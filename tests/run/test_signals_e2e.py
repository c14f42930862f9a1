"""Shutdown is not failure: Ctrl-C or SIGTERM in the middle of a run, then `--resume`.

The CLI runs as a subprocess in its own session, as a shell runs a foreground job: Ctrl-C is SIGINT to
its whole process group (the driver and the LocalCluster's worker processes), SIGTERM goes to the driver
alone (cron, systemd, Kubernetes, Airflow). Each run must end with exit 130 or 143 and one line naming
the run and the command that finishes it, no traceback, nothing committed and no image recorded
`failed`; the resume commits every image, each analysed once across the two attempts.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_image

from batch.run import faults
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET = "interrupted"
IMAGES = 120
#: Calls seen at the endpoint before the signal: the run is under way, far from its end.
CALLS_BEFORE_SIGNAL = 24
SNAPSHOT_IMAGES = 4
#: Long enough for the batches in flight (10 images at about 4 calls/s each) to finish under any load,
#: so none is cancelled and no image is paid twice.
CONFIG = """
[dask]
n_workers = 2
threads_per_worker = 2
batch_size = 10
shutdown_grace_seconds = 60.0

[rekognition]
tps = 15.0
calls_in_flight = 2

[report]
enabled = false
"""


@pytest.fixture(scope="module")
def slow_stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--latency-ms", "150"]) as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        image = make_image(rects=(("face", (40, 40, 60, 80)),))
        for prefix in ("sigint/", "sigterm/", "early/"):
            for i in range(IMAGES):
                s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i:03d}.jpg", Body=image)
        for i in range(SNAPSHOT_IMAGES):
            s3.put_object(Bucket=BUCKET, Key=f"snapshot/{i:03d}.jpg", Body=image)
        yield stack


def ok_calls(stack: LocalStack, prefix: str) -> Counter[str]:
    return Counter(
        call["name"] for call in stack.calls() if call["name"].startswith(prefix) and call["outcome"] == "ok"
    )


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_stops_the_run_and_resume_finishes_it_paying_each_image_once(
    slow_stack: LocalStack, tmp_path: Path, signum: int, code: int
) -> None:
    prefix = f"{signal.Signals(signum).name.lower()}/"
    config, out, summary_json = tmp_path / "run.toml", tmp_path / "out", tmp_path / "summary.json"
    config.write_text(CONFIG)
    env = {**os.environ, **slow_stack.env}
    command = ["run", "--config", str(config), "--analyses", "labels", "--input", f"s3://{BUCKET}/{prefix}",
               "--output", str(out), "--summary-json", str(summary_json)]  # fmt: skip
    job = subprocess.Popen(
        [sys.executable, "-m", "batch", *command], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(ok_calls(slow_stack, prefix)) < CALLS_BEFORE_SIGNAL:
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, "the run made no calls"
        time.sleep(0.05)
    if signum == signal.SIGINT:
        os.killpg(job.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=180)

    assert job.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr
    assert "leaked semaphore" not in stderr
    started, stopped = stderr.strip().splitlines()
    summary = json.loads(summary_json.read_text())
    run_id = summary["run_id"]
    assert started == f"rekbatch: run {run_id}: attempt 1 started"
    name = signal.Signals(signum).name
    assert stopped.startswith(f"rekbatch: error: run {run_id} stopped by {name}, nothing committed; ")
    assert (summary["status"], summary["exit_code"], summary["committed"]) == ("interrupted", code, False)
    assert summary["images"].get("failed", 0) == 0
    assert not list((out / "_commits").glob("*.json"))
    assert len(ok_calls(slow_stack, prefix)) < IMAGES  # it did stop part-way

    # The command the line gives, as it is.
    resume = shlex.split(stopped.split("finish it with: ", 1)[1])
    assert resume[:2] == ["rekbatch", "run"]
    assert resume[-2:] == ["--resume", run_id]
    finished = subprocess.run(
        [sys.executable, "-m", "batch", *resume[1:]], env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(summary_json.read_text())
    assert (summary["status"], summary["attempt"], summary["resumed"]) == ("completed", 2, True)
    assert summary["kept_batches"] > 0
    counts = summary["images"]
    assert (counts["listed"], counts["analysed"], counts.get("failed", 0)) == (IMAGES, IMAGES, 0)
    # Every image analysed once across both attempts: the batches in flight at the signal finished.
    assert ok_calls(slow_stack, prefix) == Counter({f"{prefix}{i:03d}.jpg": 1 for i in range(IMAGES)})


def test_ctrl_c_while_the_cluster_starts_calls_nothing(slow_stack: LocalStack, tmp_path: Path) -> None:
    """The worker processes are starting when the group gets SIGINT: none may take it (a worker that
    died of it made the cluster fail to start, exit 1 with a traceback), and no batch is submitted."""
    config, out = tmp_path / "run.toml", tmp_path / "out"
    config.write_text(CONFIG)
    job = subprocess.Popen(
        [sys.executable, "-m", "batch", "run", "--config", str(config), "--analyses", "labels",
         "--input", f"s3://{BUCKET}/early/", "--output", str(out)],
        env={**os.environ, **slow_stack.env}, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert job.stderr is not None
    started = job.stderr.readline()
    assert started.startswith("rekbatch: run ")
    time.sleep(0.5)  # the LocalCluster takes seconds to start its two worker processes
    os.killpg(job.pid, signal.SIGINT)
    _, stderr = job.communicate(timeout=180)
    assert job.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGINT, nothing committed; finish it with: rekbatch run " in stderr
    assert [call for call in slow_stack.calls() if call["name"].startswith("early/")] == []
    assert list(out.rglob("batch-*.json")) == []


def test_sigterm_during_the_state_snapshot_leaves_the_run_committed_and_exits_at_once(
    slow_stack: LocalStack, tmp_path: Path
) -> None:
    """The snapshot after the commit takes minutes at ten million keys; Kubernetes' SIGTERM gives 30 s
    before SIGKILL. The signal stops the snapshot, not the committed run: exit 0 at once, a warning, and
    the next run reads the committed run in full (0 calls). It waited for the snapshot before."""
    config, out, pause, summary_json = (tmp_path / name for name in ("run.toml", "out", "pause", "s.json"))
    config.write_text(CONFIG)
    pause.mkdir()
    env = {**os.environ, **slow_stack.env}
    command = [sys.executable, "-m", "batch", "run", "--config", str(config), "--analyses", "labels",
               "--input", f"s3://{BUCKET}/snapshot/", "--output", str(out)]  # fmt: skip
    job = subprocess.Popen(
        [*command, "--summary-json", str(summary_json)], env={**env, faults.SNAPSHOT_PAUSE: str(pause)},
        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(pause.iterdir()):
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, "the run never reached its snapshot"
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = job.communicate(timeout=faults.BARRIER_TIMEOUT_SECONDS + 60)
    assert time.monotonic() - signalled < 30, "the driver waited for the snapshot"
    assert job.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "rekbatch: warning: state snapshot not written: stopped by a signal" in stderr.splitlines()
    summary = json.loads(summary_json.read_text())
    assert (summary["status"], summary["committed"], summary["exit_code"]) == ("completed", True, 0)
    assert len(list((out / "_commits").glob("*.json"))) == 1
    assert not list((out / "_state").glob("settled-*.parquet"))

    again = subprocess.run([*command], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert ok_calls(slow_stack, "snapshot/") == Counter({f"snapshot/{i:03d}.jpg": 1 for i in range(4)})
    assert list((out / "_state").glob("settled-*.parquet"))  # the next commit wrote it
