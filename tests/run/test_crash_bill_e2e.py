"""A crash costs at most the calls in flight, and the bill is the real bill.

A 300-image run of two analyses on the local stack (the endpoint answers after 100 ms, so the run lasts
long enough to be killed part-way) has its driver killed with SIGKILL once the endpoint's call log shows
about 40 % of the images called, then `--resume`; or has one worker process killed at that point. The
endpoint's call log is the truth: every image called once per analysis at least, the calls paid twice
for one (image, operation) no more than the calls the killed processes had in flight, and the summary,
the `runs` row and the report show every call the run paid over its attempts, with the repeats apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image
from processes import gone, talks_to, wait_for, worker_processes

from batch.query import views
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "crashes", "in/"
IMAGES = 300
ANALYSES = {"labels": "DetectLabels", "text": "DetectText"}
PRICE = 0.001  # [pricing] labels and text
#: The run's cluster: worker processes, Dask threads per process, images in flight per task. A worker
#: process has THREADS x IN_FLIGHT image threads, each making one call at a time.
WORKERS, THREADS, IN_FLIGHT = 2, 2, 2
SETTINGS = {
    "REKBATCH_DASK__N_WORKERS": str(WORKERS),
    "REKBATCH_DASK__THREADS_PER_WORKER": str(THREADS),
    "REKBATCH_REKOGNITION__CALLS_IN_FLIGHT": str(IN_FLIGHT),
    # Batches much larger than the calls in flight: a batch cut short holds many images already called.
    "REKBATCH_DASK__BATCH_SIZE": "16",
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


def rekbatch(stack: LocalStack, tmp: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(tmp / "out"),
               "--analyses", ",".join(ANALYSES), "--summary-json", str(tmp / "summary.json"),
               *args]  # fmt: skip
    environment = {**os.environ, **stack.env, **SETTINGS}
    return subprocess.Popen(
        command, env=environment, cwd=tmp, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def logged(stack: LocalStack) -> list[dict[str, Any]]:
    """The endpoint's call log so far; a line it is still writing is not read."""
    text = stack.call_log.read_text(encoding="utf-8") if stack.call_log.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def ok_calls(stack: LocalStack, since: int) -> Counter[tuple[str, str]]:
    """Successful (billed) calls the endpoint logged since its `since`-th call, by (operation, key)."""
    return Counter((c["operation"], c["name"]) for c in logged(stack)[since:] if c["outcome"] == "ok")


@contextlib.contextmanager
def killed_at_the_end(job: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """`job`, killed with its worker processes if the test ends first (so no other test sees its calls)."""
    workers = wait_for(lambda: len(w := worker_processes(job.pid)) == WORKERS and w)
    try:
        yield job
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
        wait_for(lambda: all(gone(w) for w in workers), timeout=30)  # they exit when their parent dies


def part_way(stack: LocalStack, since: int) -> None:
    """Wait until about 40 % of the images have been called."""
    wait_for(lambda: len({key for _, key in ok_calls(stack, since)}) >= 0.4 * IMAGES)


def paid(calls: list[dict[str, Any]], outcome: str | None = None) -> int:
    """Calls Rekognition bills, of a summary's calls: answered `ok`, and `in-flight` (sent by a process
    that died before it read the answer: billed if Rekognition answered)."""
    wanted = (outcome,) if outcome else ("ok", "in-flight")
    return sum(c["count"] for c in calls if c["outcome"] in wanted)


def check_the_bill(stack: LocalStack, since: int, tmp: Path, *, ceiling: int) -> dict[str, Any]:
    """Every image called, at most `ceiling` calls paid twice, and the summary's bill is the endpoint's;
    return the summary."""
    called = ok_calls(stack, since)
    repeats = sum(n - 1 for n in called.values())
    assert set(called) == {(operation, key) for operation in ANALYSES.values() for key in KEYS}
    assert repeats <= ceiling, f"{repeats} calls paid twice; {ceiling} were in flight at most"
    summary = json.loads((tmp / "summary.json").read_text())
    assert (summary["status"], summary["images"]["analysed"]) == ("completed", IMAGES)
    with views.connect(str(tmp / "out")) as sql:  # every image's rows, once: a LINE and its two WORDs
        texts = sql.sql("SELECT key, count(*) FROM text GROUP BY key").fetchall()
    assert dict(texts) == dict.fromkeys(KEYS, 3)
    # The bill counts every call Rekognition answered with success, in each attempt; a call in flight when
    # its process died counts as paid (its answer may have come after). Only a call killed between its
    # record and its request is counted and not paid: the difference, if any, is such calls.
    logged, bill = called.total(), paid(summary["calls"])
    unreached = bill - logged
    print(f"{repeats} calls paid twice, {ceiling} in flight at most; bill {bill} calls, endpoint {logged}")
    assert paid(summary["calls"], "ok") <= logged
    assert 0 <= unreached <= paid(summary["calls"], "in-flight")
    assert paid(summary["repeated_calls"]) - unreached == repeats
    assert summary["estimated_cost_usd"] == pytest.approx(bill * PRICE)
    assert summary["repeated_cost_usd"] == pytest.approx(paid(summary["repeated_calls"]) * PRICE)
    # The runs row and the report say the same.
    with views.connect(str(tmp / "out")) as sql:
        row = sql.sql(
            "SELECT calls, repeated_calls, estimated_cost_usd, repeated_cost_usd FROM runs"
        ).fetchall()
    ((calls, repeated, cost, repeated_cost),) = row
    assert sorted(calls, key=str) == sorted(summary["calls"], key=str)
    assert sorted(repeated, key=str) == sorted(summary["repeated_calls"], key=str)
    assert (cost, repeated_cost) == pytest.approx((bill * PRICE, summary["repeated_cost_usd"]))
    page = Path(summary["report"]).read_text()
    shown = dict(re.findall(r'data-figure="(\w+)" data-value="([^"]*)"', page))
    assert int(shown["repeated_calls"]) == paid(summary["repeated_calls"])
    assert float(shown["estimated_cost_usd"]) == pytest.approx(bill * PRICE)
    return summary


def test_a_killed_driver_costs_at_most_the_calls_in_flight(stack: LocalStack, tmp_path: Path) -> None:
    since = len(logged(stack))
    with killed_at_the_end(rekbatch(stack, tmp_path, "--run-id", "crash-1")) as job:
        part_way(stack, since)
        os.kill(job.pid, signal.SIGKILL)
        assert job.wait() == -signal.SIGKILL
    assert not (tmp_path / "summary.json").exists()

    code, stderr = finish(rekbatch(stack, tmp_path, "--resume", "crash-1"))
    assert code == 0, stderr
    ceiling = WORKERS * THREADS * IN_FLIGHT
    summary = check_the_bill(stack, since, tmp_path, ceiling=ceiling)
    # Every image called before the kill is kept, those of unfinished batches too, but those in flight.
    assert summary["kept_images"] >= 0.4 * IMAGES - ceiling


def test_a_killed_worker_costs_at_most_its_calls_in_flight(stack: LocalStack, tmp_path: Path) -> None:
    since = len(logged(stack))
    with killed_at_the_end(rekbatch(stack, tmp_path, "--run-id", "worker-1")) as job:
        workers = worker_processes(job.pid)
        part_way(stack, since)
        victim = wait_for(lambda: next((w for w in workers if talks_to(w, stack.rekognition_url)), None))
        os.kill(victim, signal.SIGKILL)
        code, stderr = finish(job)
    assert code == 0, stderr
    check_the_bill(stack, since, tmp_path, ceiling=THREADS * IN_FLIGHT)
