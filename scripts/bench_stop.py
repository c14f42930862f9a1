"""How a run stops (docs/design/stopping.md): against a silent endpoint, and on SIGINT or SIGTERM.

    python scripts/bench_stop.py silent [--images N]        # seconds to exit against a silent endpoint
    python scripts/bench_stop.py INT|TERM [--images N]      # a signal mid-run, then --resume

`silent`: `rekbatch run` with the default config (all five analyses) on the local S3, its Rekognition
endpoint a socket that accepts connections and never answers; prints the exit code, the seconds from
the command's start to its exit and its last stderr line. `INT` sends SIGINT to the job's process group
(a terminal's Ctrl-C), `TERM` sends SIGTERM to the driver, once the endpoint (150 ms latency) has
answered 40 calls; then the run is resumed, and it prints both exits, the stderr of the first, the
resume's image counts and the DetectLabels calls made in all. Runs with whatever `batch` is on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from local_stack.stack import LocalStack

BUCKET = "stopping"
SIGNAL_CONFIG = """[dask]
n_workers = 2
threads_per_worker = 2
batch_size = 10

[rekognition]
tps = 20.0
calls_in_flight = 4

[report]
enabled = false
"""


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (140, 135, 130)).save(buffer, "JPEG")
    return buffer.getvalue()


def seed(stack: LocalStack, images: int) -> None:
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=BUCKET)
    body = jpeg()
    for i in range(images):
        s3.put_object(Bucket=BUCKET, Key=f"in/{i:04d}.jpg", Body=body)


def silent_endpoint() -> str:
    """A socket that accepts every connection and never answers; its URL."""
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def job(out: Path, *args: str) -> list[str]:
    where = ["--input", f"s3://{BUCKET}/in/", "--output", str(out)]
    return [sys.executable, "-m", "batch", "run", *where, *args]


def silent(images: int, work: Path) -> None:
    with LocalStack() as stack:
        seed(stack, images)
        env = {**os.environ, **stack.env, "AWS_ENDPOINT_URL_REKOGNITION": silent_endpoint()}
        started = time.monotonic()
        done = subprocess.run(job(work / "out"), env=env, capture_output=True, text=True, check=False)
        print(f"exit {done.returncode} after {time.monotonic() - started:.1f} s")
        print(done.stderr.strip().splitlines()[-1])


def signalled(which: str, images: int, work: Path) -> None:
    config, summary = work / "run.toml", work / "summary.json"
    config.write_text(SIGNAL_CONFIG)
    args = ("--config", str(config), "--analyses", "labels", "--summary-json", str(summary))
    with LocalStack(extra_args=["--latency-ms", "150"]) as stack:
        seed(stack, images)
        env = {**os.environ, **stack.env}
        first = subprocess.Popen(
            job(work / "out", *args), env=env, text=True, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        while sum(call["outcome"] == "ok" for call in stack.calls()) < 40 and first.poll() is None:
            time.sleep(0.05)
        sent = time.monotonic()
        if which == "INT":
            os.killpg(first.pid, signal.SIGINT)
        else:
            first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate()
        print(f"exit {first.returncode} {time.monotonic() - sent:.1f} s after SIG{which}; "
              f"{len(stderr.splitlines())} lines of stderr:\n{stderr}")  # fmt: skip
        run_id = next((work / "out" / "_runs").iterdir()).name
        resumed = subprocess.run(job(work / "out", *args, "--resume", run_id), env=env, capture_output=True,
                                 text=True, check=False)  # fmt: skip
        counts: dict[str, Any] = json.loads(summary.read_text())["images"]
        calls = Counter(call["name"] for call in stack.calls() if call["outcome"] == "ok")
        print(f"resume: exit {resumed.returncode}, images {counts}; DetectLabels answered {calls.total()} "
              f"times for {len(calls)} images")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("silent", "INT", "TERM"))
    parser.add_argument("--images", type=int, default=None, help="default: 4 (silent), 200 (a signal)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    try:
        if args.what == "silent":
            silent(args.images or 4, work)
        else:
            signalled(args.what, args.images or 200, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
