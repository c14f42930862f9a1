"""Done when 4 of the reliability issue: a faulty, overloaded Rekognition, and every image analysed once.

The local endpoint answers 5 % of calls with InternalServerError, drops 2 % of connections without an
answer, throttles 5 % on top of a quota lower than the one the job was told (another job shares the
account: a throttling storm), and answers 1 % only after the client's read timeout. The job must still
analyse every image exactly once in its committed output, and pay for few calls beyond one per image and
analysis: a call answered after the client gave up is billed, and the retry that follows is billed again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_image

from batch.query import views
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET, PREFIX = "faulty", "in/"
IMAGES = 40
ANALYSES = ("labels", "faces", "text", "moderation", "celebrities")
FAULTS = ["--fault-rate-500", "0.05", "--fault-rate-drop", "0.02", "--fault-rate-throttle", "0.05",
          "--fault-rate-slow", "0.01", "--slow-seconds", "2.5", "--seed", "26"]  # fmt: skip


@pytest.fixture(scope="module")
def faulty_stack() -> Iterator[LocalStack]:
    # 12 calls/s per operation at the endpoint; the job believes it has 20.
    with LocalStack(tps=12, burst=3, extra_args=FAULTS) as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        for i in range(IMAGES):  # distinct bytes per image (sizes differ), a face and a box each
            body = make_image(
                size=(200 + i, 150), rects=(("face", (20, 20, 40, 50)), ("box", (90, 40, 50, 50)))
            )
            s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{i:03d}.jpg", Body=body)
        yield stack


def test_every_image_is_analysed_once_through_faults_and_throttling(
    faulty_stack: LocalStack, tmp_path: Path
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        "[dask]\nn_workers = 1\nthreads_per_worker = 2\nbatch_size = 10\n\n"
        "[rekognition]\ntps = 20.0\nread_timeout = 1.0\nconnect_timeout = 1.0\n"
        "backoff_base = 0.05\nbackoff_max = 0.5\nmax_attempts = 8\n\n[report]\nenabled = false\n"
    )
    out, summary_path = tmp_path / "out", tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "batch", "run", "--config", str(config), "--analyses", ",".join(ANALYSES),
         "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(out), "--summary-json", str(summary_path)],
        env={**os.environ, **faulty_stack.env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = faulty_stack.calls()
    outcomes = Counter(call["outcome"] for call in calls)
    # The faults did happen (the seeded draws over a few hundred calls), and so did the storm.
    assert outcomes["InternalServerError"] > 0
    assert outcomes["ProvisionedThroughputExceededException"] + outcomes["ThrottlingException"] > 0
    assert len(calls) > IMAGES * len(ANALYSES)
    # Seed 26 draws "slow" at the 21st and 31st fault draws only: two answers came after the timeout.
    assert sum(call["latency_ms"] > 1000 for call in calls) == 2
    # Every image analysed, exactly once, in what readers see.
    with views.connect(str(out)) as sql:
        rows = sql.sql("SELECT key, status, len(analyses) FROM images").fetchall()
    assert Counter(key for key, _, _ in rows) == Counter(f"{PREFIX}{i:03d}.jpg" for i in range(IMAGES))
    assert {(status, n) for _, status, n in rows} == {("analysed", len(ANALYSES))}
    # Billed calls: at most 2 % over one per image and analysis (answers that came after the timeout).
    ok = [call for call in calls if call["outcome"] == "ok"]
    assert len(ok) <= 1.02 * IMAGES * len(ANALYSES)
    per_call = Counter((call["operation"], call["name"]) for call in ok)
    assert len(per_call) == IMAGES * len(ANALYSES)
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "completed"
    assert summary["retries"] > 0
