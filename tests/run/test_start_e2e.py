"""A run starts fast: the listing begins before the Dask cluster exists, and a run with nothing to analyse
starts no cluster at all (docs/design/start-up.md).

The CLI runs as a subprocess on the local stack; its Dask worker processes are read from /proc. The S3
endpoint the job talks to is a TCP relay in front of moto that notes, when the job's listing request
(a `ListObjectsV2` page, not the one-key readability check) goes through, which worker processes the job
has then.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from processes import worker_processes

from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "start-input"
PREFIX = "photos/"
REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1\r\n")


class ListingRelay:
    """A TCP relay to the S3 server at `target` that calls `on_listing()` as each request listing the
    input prefix page by page goes through (its result is kept in `seen`, in order)."""

    def __init__(self, target: str, on_listing: Callable[[], object]) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._on_listing = on_listing
        self.seen: list[object] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests:
                    for match in REQUEST_LINE.finditer(data):
                        if self._is_listing(match.group(2).decode()):
                            self.seen.append(self._on_listing())
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _is_listing(target: str) -> bool:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        return (
            parts.path.strip("/") == BUCKET
            and query.get("list-type") == ["2"]
            and query.get("prefix") == [PREFIX]
            and query.get("max-keys") != ["1"]  # the readability check asks for one key
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack() as local:
        s3 = local.s3_client()
        seed_samples(s3, BUCKET, PREFIX, tmp_path_factory.mktemp("samples"))
        s3.put_object(Bucket=BUCKET, Key="empty-prefix/readme.txt", Body=b"not an image")
        yield local


def start_job_command(out: Path, summary: Path, prefix: str = PREFIX) -> list[str]:
    config = ROOT / "configs" / "local.toml"
    return [sys.executable, "-m", "batch", "run", "--config", str(config), "--input", f"s3://{BUCKET}/{prefix}",
            "--output", str(out), "--summary-json", str(summary)]  # fmt: skip


def start_job(env: dict[str, str], out: Path, summary: Path, prefix: str = PREFIX) -> subprocess.Popen[str]:
    command = start_job_command(out, summary, prefix)
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def workers_seen(job: subprocess.Popen[str]) -> set[int]:
    """Every Dask worker process the job had while it ran (/proc, looked at until it exits)."""
    seen: set[int] = set()
    while job.poll() is None:
        seen.update(worker_processes(job.pid))
        time.sleep(0.005)  # a worker process lives for seconds: it cannot slip between two looks
    return seen


def test_the_listing_begins_before_the_cluster_starts(stack: LocalStack, tmp_path: Path) -> None:
    """The job's listing request reaches S3 while the job has no worker process yet: listing and
    planning do not wait for the cluster, which starts once there is an image to analyse."""
    job: subprocess.Popen[str] | None = None
    relay = ListingRelay(stack.s3_url, lambda: worker_processes(job.pid) if job else None)
    try:
        env = {**os.environ, **stack.env, "AWS_ENDPOINT_URL_S3": relay.url}
        job = start_job(env, tmp_path / "out", tmp_path / "summary.json")
        _, stderr = job.communicate(timeout=300)
    finally:
        relay.close()
    assert job.returncode == 0, stderr
    assert json.loads((tmp_path / "summary.json").read_text())["images"]["analysed"] > 0
    assert relay.seen == [[]], "the listing went out after the worker processes had started"


def run_without_workers(env: dict[str, str], out: Path, summary: Path, prefix: str) -> tuple[int, str, dict]:
    """Run the job; its exit code, its stdout and its summary JSON, after checking that it never had a
    Dask worker process."""
    job = start_job(env, out, summary, prefix)
    workers = workers_seen(job)
    stdout, stderr = job.communicate(timeout=300)
    assert workers == set(), stderr
    return job.returncode, stdout, json.loads(summary.read_text())


def test_a_run_with_nothing_to_analyse_starts_no_cluster(stack: LocalStack, tmp_path: Path) -> None:
    """The second of two identical runs (everything committed and unchanged) starts no Dask worker
    process, and ends as before: committed, every image unchanged, no call, exit 0."""
    env = {**os.environ, **stack.env}
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    first = start_job(env, out, summary)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    listed = json.loads(summary.read_text())["images"]["listed"]
    code, stdout, result = run_without_workers(env, out, summary, PREFIX)
    assert code == 0
    assert (result["status"], result["calls"], result["manifest"] is not None) == ("completed", [], True)
    assert result["images"]["listed"] == result["images"]["unchanged"] == listed
    assert "; committed: yes" in stdout.splitlines()[1]


def test_a_run_over_a_prefix_without_images_starts_no_cluster(stack: LocalStack, tmp_path: Path) -> None:
    """A prefix with no image: no Dask worker process, and the same end as before (`empty`, exit 7)."""
    env = {**os.environ, **stack.env}
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    code, stdout, result = run_without_workers(env, out, summary, "empty-prefix/")
    assert code == 7
    assert (result["status"], result["calls"], result["images"].get("listed", 0)) == ("empty", [], 0)
    assert ": empty in " in stdout.splitlines()[0]


def test_ctrl_c_during_the_listing_starts_no_cluster(stack: LocalStack, tmp_path: Path) -> None:
    """SIGINT to the job's group while its listing request is held (before any image is planned): the
    run stops once the listing ends, as any run stopped before its batches (exit 130, one line, nothing
    committed), without ever starting a worker process."""
    listing, release = threading.Event(), threading.Event()
    relay = ListingRelay(stack.s3_url, lambda: (listing.set(), release.wait(120)))
    try:
        env = {**os.environ, **stack.env, "AWS_ENDPOINT_URL_S3": relay.url}
        job = subprocess.Popen(
            [*start_job_command(tmp_path / "out", tmp_path / "summary.json"), "--analyses", "labels"],
            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert listing.wait(120), "the listing request never came"
        os.killpg(job.pid, signal.SIGINT)
        time.sleep(0.5)  # the driver notes the signal while its listing waits for S3
        release.set()
        workers = workers_seen(job)
        _, stderr = job.communicate(timeout=300)
    finally:
        release.set()
        relay.close()
    assert job.returncode == 130, stderr
    assert workers == set()
    assert "stopped by SIGINT, nothing committed; finish it with: rekbatch run " in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "_commits").exists()
