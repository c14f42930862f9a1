"""Throughput of the local Rekognition endpoint.

    python scripts/bench_endpoint.py [--threads N] [--seconds S] [-- ENDPOINT FLAGS]


Starts its own LocalStack (no quota, no latency), seeds the samples, then fires concurrent boto3 calls from a
thread pool for a few seconds, first with Image.Bytes and then with Image.S3Object, cycling over the good
samples. Prints calls/s as the client saw them and as the endpoint's call log recorded them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from batch.local.stack import LocalStack, seed_samples


def run(
    client: Any, images: list[dict[str, Any]], operation: str, threads: int, seconds: float
) -> tuple[int, int, float]:
    """(ok calls, failed calls, elapsed seconds)."""
    method = getattr(client, operation)
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            try:
                method(Image=images[i % len(images)])
                key = "ok"
            except Exception:
                key = "failed"
            with lock:
                counts[key] += 1
            i += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for t in range(threads):
            pool.submit(worker, t)
    return counts["ok"], counts["failed"], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--operation", default="detect_labels")
    parser.add_argument(
        "endpoint_args", nargs="*", help="passed to the endpoint, after --, e.g. -- --tps 100"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack(extra_args=args.endpoint_args) as stack:
        truth = seed_samples(stack.s3_client(), "bench", "in/", Path(tmp))
        good = truth.good()
        os.environ.update(stack.env)
        client = boto3.client(
            "rekognition", config=Config(max_pool_connections=args.threads, retries={"total_max_attempts": 1})
        )
        modes = {
            "Bytes": [{"Bytes": (Path(tmp) / s.name).read_bytes()} for s in good],
            "S3Object": [{"S3Object": {"Bucket": "bench", "Name": s.key}} for s in good],
        }
        print(
            f"{args.operation}, {args.threads} threads, {args.seconds:.0f} s per mode, {len(good)} images, "
            f"endpoint args: {' '.join(args.endpoint_args) or '(none)'}"
        )
        for mode, images in modes.items():
            run(client, images, args.operation, args.threads, 0.5)  # warm: pools, analysis cache
            before = len(stack.calls())
            ok, failed, elapsed = run(client, images, args.operation, args.threads, args.seconds)
            logged = stack.calls()[before:]
            span = logged[-1]["ts"] - logged[0]["ts"] if len(logged) > 1 else elapsed
            mean_ms = sum(c["latency_ms"] for c in logged) / max(1, len(logged))
            print(
                f"{mode:9s} {ok / elapsed:7.1f} calls/s (client)  "
                f"{len(logged) / span:7.1f} calls/s (call log)  "
                f"ok={ok} failed={failed}  server latency {mean_ms:.2f} ms"
            )


if __name__ == "__main__":
    main()
