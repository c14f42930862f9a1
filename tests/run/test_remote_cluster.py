"""The same job on a separately started Dask cluster: a `dask scheduler` and `dask worker` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch.core.selection import IMAGE_SUFFIXES
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

BUCKET = "remote-input"
PREFIX = "photos/"


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def scheduler_address(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two worker processes, each started on its own, as on a real cluster."""
    tmp = tmp_path_factory.mktemp("cluster")
    scheduler_file = tmp / "scheduler.json"
    env = {**os.environ, **stack.env}
    bin_dir = Path(sys.executable).parent
    scheduler = start(
        [
            str(bin_dir / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        env,
    )
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = start(
            [
                str(bin_dir / "dask"),
                "worker",
                address,
                "--nworkers",
                "2",
                "--nthreads",
                "2",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            env,
        )
        _wait_for_workers(address, 2)
        yield address
    finally:
        if workers is not None:
            stop(workers)
        stop(scheduler)


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(count, timeout=60)


def run_job(stack: LocalStack, tmp: Path, *args: str, extra_env: dict[str, str] | None = None) -> dict:
    summary = tmp / "summary.json"
    command = [
        sys.executable,
        "-m",
        "batch",
        "run",
        "--input",
        f"s3://{BUCKET}/{PREFIX}",
        "--output",
        str(tmp / "out"),
        "--analyses",
        "labels,faces",
        "--summary-json",
        str(summary),
        *args,
    ]
    result = subprocess.run(
        command,
        env={**os.environ, **stack.env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(summary.read_text())


def test_the_job_runs_on_a_remote_scheduler(
    stack: LocalStack, scheduler_address: str, tmp_path: Path
) -> None:
    truth = seed_samples(stack.s3_client(), BUCKET, PREFIX, tmp_path / "samples")
    summary = run_job(stack, tmp_path, "--scheduler", scheduler_address, "--limit", "7")
    assert summary["status"] == "completed"
    assert summary["images"]["listed"] == 7
    keys = duckdb.sql(
        f"SELECT key FROM read_parquet('{tmp_path}/out/images/**/*.parquet') ORDER BY key"
    ).fetchall()
    selected = sorted(s.key for s in truth.in_prefix() if s.key.lower().endswith(IMAGE_SUFFIXES))
    # --limit takes the first N keys in listing order (S3 lists keys in UTF-8 binary order).
    assert [k for (k,) in keys] == sorted(selected, key=lambda k: k.encode())[:7]


def test_dask_scheduler_address_from_the_environment(
    stack: LocalStack, scheduler_address: str, tmp_path: Path
) -> None:
    seed_samples(stack.s3_client(), BUCKET, PREFIX, tmp_path / "samples")
    summary = run_job(
        stack, tmp_path, "--limit", "3", extra_env={"DASK_SCHEDULER_ADDRESS": scheduler_address}
    )
    assert summary["images"]["listed"] == 3
    assert summary["cpu_seconds"]["workers"] > 0


def test_the_statistical_profiler_is_off_and_the_timers_slower_on_every_worker(
    stack: LocalStack, scheduler_address: str, tmp_path: Path
) -> None:
    """Its sys._current_frames() deadlocks Python 3.11 workers under GC (python/cpython#106883); Dask's
    20 ms tick, 100 ms memory monitor and 500 ms system monitor cost CPU the job does not need."""
    from distributed import Client

    def periods(dask_worker: Any) -> dict[str, float]:
        return {
            name: dask_worker.periodic_callbacks[name].callback_time
            for name in ("tick", "memory_monitor", "monitor")
        }

    seed_samples(stack.s3_client(), BUCKET, PREFIX, tmp_path / "samples")
    run_job(stack, tmp_path, "--scheduler", scheduler_address, "--limit", "2")
    with Client(scheduler_address, timeout="20s") as client:
        running = client.run(lambda dask_worker: dask_worker.periodic_callbacks["profile"].is_running())
        timers = client.run(periods)
    assert running
    assert not any(running.values())
    assert timers
    assert all(worker == {"tick": 200, "memory_monitor": 500, "monitor": 2000} for worker in timers.values())
