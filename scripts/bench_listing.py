"""Streamed listing at scale: the job on a prefix of 100,000 keys (issue 5, "make bench").

    python scripts/bench_listing.py [--keys N] [--limit L]

S3 is moto in this process (ThreadedMotoServer), seeded through moto's own backend in seconds (100k PUTs
over HTTP would take minutes). Every key holds the same small valid
JPEG. The Rekognition endpoint is a subprocess reading from that moto, as in LocalStack.

Measures (a) `--dry-run` over the whole prefix, and over a 1,000-key prefix for comparison: wall time and
the driver's peak RSS; if the listing is streamed, memory does not grow with the number of keys;
(b) a real run with `--limit L`: time to first call (first call-log `ts` minus the job's launch, and minus
the job's own `started_at`), target < 5 s, and the driver's peak RSS, target < 300 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.s3.models import s3_backends
from PIL import Image, ImageDraw

from local_stack.s3server import free_port, stop_process, wait_until_up
from local_stack.stack import DUMMY_ENV, endpoint_command

BUCKET, BIG, SMALL = "listing", "big/", "small/"
#: GNU time (`-v` prints the maximum RSS the OS saw); optional, the summary has the driver's own figure.
TIME_V = shutil.which("time")


@dataclass
class JobRun:
    """One run of the job: launch time (epoch s), wall seconds, its summary, GNU time's max RSS (MB)."""

    launched: float
    wall: float
    summary: dict[str, Any]
    time_v_rss_mb: float | None


def jpeg() -> bytes:
    """A 160x120 JPEG with a red "face" and a green "box": valid for every analysis, a few KB."""
    img = Image.new("RGB", (160, 120), (150, 140, 130))
    draw = ImageDraw.Draw(img)
    draw.rectangle([20, 20, 59, 69], fill=(255, 0, 0))
    draw.rectangle([90, 40, 139, 89], fill=(0, 255, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def seed(keys: int, small: int) -> float:
    """Put `keys` objects under BIG and `small` under SMALL straight into moto's backend; return seconds."""
    started = time.monotonic()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, DUMMY_ENV["AWS_DEFAULT_REGION"])
    body = jpeg()
    for prefix, count in ((BIG, keys), (SMALL, small)):
        for i in range(count):
            backend.put_object(BUCKET, f"{prefix}{i:07d}.jpg", body)
    return time.monotonic() - started


@contextlib.contextmanager
def moto_in_process() -> Iterator[str]:
    # werkzeug logs every request line at INFO to stderr: 100+ pages of noise per listing.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def rekognition_endpoint(s3_url: str, call_log: Path, tps: float) -> Iterator[str]:
    """Our endpoint as LocalStack starts it, with the bench's quota and latency."""
    port = free_port()
    cmd = endpoint_command(
        port,
        s3_url,
        call_log,
        tps=tps,
        extra_args=["--latency-ms", "100", "--latency-jitter-ms", "200", "--seed", "1"],
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/_health", proc=proc)
        yield url
    finally:
        stop_process(proc)


def run_bounded(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """Run `cmd` in its own process group; past `timeout`, kill the whole group (the job's LocalCluster
    workers included), so a hung job fails the bench instead of hanging it or leaking processes."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, stdout, f"timed out after {timeout:.0f} s\n{stderr}"
    return proc.returncode, stdout, stderr


def run_job(workdir: Path, env: dict[str, str], name: str, extra: list[str], timeout: float = 300) -> JobRun:
    """The job as a subprocess (under GNU time -v when present, for the OS's view of peak RSS)."""
    summary_path = workdir / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "batch",
        "run",
        "--output",
        str(workdir / f"out-{name}"),
        "--summary-json",
        str(summary_path),
        *extra,
    ]
    if TIME_V:
        cmd = [TIME_V, "-v", *cmd]
    launched = time.time()
    returncode, stdout, stderr = run_bounded(cmd, env, timeout)
    wall = time.time() - launched
    if returncode != 0 or not summary_path.exists():
        sys.exit(f"{name}: the job exited with {returncode} after {wall:.0f} s\n{stdout}\n{stderr[-3000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    rss = int(found.group(1)) / 1024 if found else None
    return JobRun(launched, wall, json.loads(summary_path.read_text()), rss)


def first_call_ts(call_log: Path) -> float | None:
    with call_log.open(encoding="utf-8") as fh:
        return min((json.loads(line)["ts"] for line in fh if line.strip()), default=None)


def report_dry_run(name: str, run: JobRun) -> None:
    rss = f", GNU time max RSS {run.time_v_rss_mb:.0f} MB" if run.time_v_rss_mb else ""
    print(
        f"  {name:28s} {run.summary['images'].get('listed', 0):>7} keys listed in {run.wall:5.1f} s "
        f"(job's own {run.summary['seconds']:.1f} s); "
        f"driver peak RSS {run.summary['driver_peak_rss_mb']:.0f} MB{rss}"
    )


def report_real_run(run: JobRun, call_log: Path, limit: int) -> list[tuple[str, bool, str]]:
    first = first_call_ts(call_log)
    started = datetime.fromisoformat(run.summary["started_at"]).timestamp()
    ttfc = (first - run.launched) if first else float("inf")
    calls = sum(c["count"] for c in run.summary["calls"])
    print(
        f"  --limit {limit}: {run.summary['status']} in {run.wall:.1f} s, {calls} call attempts, "
        f"images {run.summary['images']}"
    )
    print(
        f"  time to first call: {ttfc:.2f} s from launch ({first - started if first else float('inf'):.2f} s "
        f"from the job's started_at, i.e. after interpreter start and config)"
    )
    rss = run.summary["driver_peak_rss_mb"]
    print(
        f"  driver peak RSS {rss:.0f} MB"
        + (
            f" (GNU time, max over the job's processes: {run.time_v_rss_mb:.0f} MB)"
            if run.time_v_rss_mb
            else ""
        )
    )
    return [
        ("time to first call < 5 s (from launch)", ttfc < 5.0, f"{ttfc:.2f} s"),
        ("driver peak RSS < 300 MB", rss < 300, f"{rss:.0f} MB"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--small", type=int, default=1_000, help="keys of the comparison prefix")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--tps", type=float, default=50.0)
    args = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # progress shows as it comes
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp, moto_in_process() as s3_url:
        workdir, call_log = Path(tmp), Path(tmp) / "calls.jsonl"
        seconds = seed(args.keys, args.small)
        print(f"seeded {args.keys} + {args.small} keys into moto's backend in {seconds:.1f} s")
        env = {**os.environ, **DUMMY_ENV, "AWS_ENDPOINT_URL_S3": s3_url}
        print("(a) dry run (lists and counts; calls nothing):")
        for name, prefix in ((f"{args.small} keys", SMALL), (f"{args.keys} keys", BIG)):
            # --tps: a quota of the user's, so the dry run asks no Service Quotas (there is none here).
            dry = ["--input", f"s3://{BUCKET}/{prefix}", "--dry-run", "--tps", str(args.tps)]
            report_dry_run(name, run_job(workdir, env, name.split()[0], dry))
        with rekognition_endpoint(s3_url, call_log, args.tps) as rek_url:
            env["AWS_ENDPOINT_URL_REKOGNITION"] = rek_url
            print(f"(b) real run over the {args.keys}-key prefix, all analyses, --tps {args.tps:g}:")
            run = run_job(
                workdir,
                env,
                "real",
                ["--input", f"s3://{BUCKET}/{BIG}", "--limit", str(args.limit), "--tps", str(args.tps)],
            )
            checks = report_real_run(run, call_log, args.limit)
    print()
    for target, met, evidence in checks:
        print(f"{'PASS' if met else 'FAIL'}  {target}: {evidence}")


if __name__ == "__main__":
    main()
