"""A Rekognition endpoint that only fails, or never answers: the run ends with a reason instead of
retrying for hours."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
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


class SilentEndpoint:
    """A listening socket that accepts every connection and never answers: requests time out."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:  # closed
                return
            self.accepted.append(time.monotonic())
            self._held.append(connection)

    def close(self) -> None:
        self._server.close()
        for connection in self._held:
            connection.close()


SILENT_IMAGES = 16
SILENT_LIMIT = 5


@pytest.fixture
def silent_stack() -> Iterator[tuple[LocalStack, SilentEndpoint]]:
    endpoint = SilentEndpoint()
    with LocalStack() as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket="silent")
        image = make_image(rects=(("face", (40, 40, 60, 80)),))
        for i in range(SILENT_IMAGES):
            s3.put_object(Bucket="silent", Key=f"in/{i:03d}.jpg", Body=image)
        yield stack, endpoint
    endpoint.close()


def test_an_endpoint_that_never_answers_aborts_the_run_once_silent_for_the_limit(
    silent_stack: tuple[LocalStack, SilentEndpoint], tmp_path: Path
) -> None:
    """Read timeout 2 s, silence limit 5 s, and a retry budget too large to end it: retrying every call
    to its 6 attempts would take over a minute and commit every image `failed`."""
    stack, endpoint = silent_stack
    config = tmp_path / "run.toml"
    config.write_text(
        "[dask]\nn_workers = 1\nthreads_per_worker = 2\nbatch_size = 4\n\n"
        "[rekognition]\ncalls_in_flight = 2\nread_timeout = 2.0\nconnect_timeout = 1.0\n"
        f"silent_abort_seconds = {SILENT_LIMIT}.0\nretry_budget_capacity = 1000.0\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, **stack.env, "AWS_ENDPOINT_URL_REKOGNITION": endpoint.url}
    result = subprocess.run(
        [sys.executable, "-m", "batch", "run", "--config", str(config), "--analyses", "labels",
         "--input", "s3://silent/in/", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    ended = time.monotonic()
    assert result.returncode == 4, result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"aborted, nothing committed: Rekognition answered no call for {SILENT_LIMIT} s "
            "(rekognition.silent_abort_seconds)"
        )
    )
    silent_for = ended - endpoint.accepted[0]
    assert SILENT_LIMIT <= silent_for < SILENT_LIMIT + 25  # the limit, the cluster's close, and load
    # No batch was recorded: nothing `failed` for a resume to keep, every image is analysed again.
    assert list(out.rglob("batch-*.json")) == []
