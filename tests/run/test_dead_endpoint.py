"""A Rekognition endpoint that only fails: the run ends with a reason instead of retrying for hours."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_image

from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 40
CAPACITY = 8


@pytest.fixture(scope="module")
def failing_stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--fault-rate-500", "1.0"]) as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket="dead")
        image = make_image(rects=(("face", (40, 40, 60, 80)),))
        for i in range(IMAGES):
            s3.put_object(Bucket="dead", Key=f"in/{i:03d}.jpg", Body=image)
        yield stack


def test_a_dead_endpoint_aborts_the_run_after_the_retry_budget(
    failing_stack: LocalStack, tmp_path: Path
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        "[dask]\nn_workers = 1\nthreads_per_worker = 1\nbatch_size = 10\n\n"
        "[rekognition]\ncalls_in_flight = 4\nbackoff_base = 0.01\nbackoff_max = 0.05\n"
        f"retry_budget_capacity = {CAPACITY}.0\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "batch", "run", "--config", str(config), "--analyses", "labels,faces",
         "--input", "s3://dead/in/", "--output", str(tmp_path / "out")],
        env={**os.environ, **failing_stack.env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert "retry budget spent" in last_line
    assert "InternalServerError" in last_line
    attempts = len(failing_stack.calls())
    first_attempts = IMAGES * 2  # an upper bound: the run stops before most images are tried
    # Every retry drew on the budget: its capacity plus 0.1 per call made, in the one worker process.
    assert attempts <= first_attempts + CAPACITY + 0.1 * first_attempts
    assert attempts < IMAGES * 2 * 6  # what retrying every call to its attempt cap would have cost
