"""Throughput of the local Rekognition endpoint.

    python scripts/bench_endpoint.py [--threads N] [--processes P] [--seconds S] [-- ENDPOINT FLAGS]


Starts its own LocalStack (no quota, no latency), seeds the samples, then fires concurrent boto3 calls for a
few seconds, first with Image.Bytes and then with Image.S3Object, cycling over the good samples. Prints
calls/s as the client saw them and as the endpoint's call log recorded them.

The --threads client threads are spread over --processes client processes (default 1). boto3's own CPU per
call caps one client process in Bytes mode; try --processes 2 to look past that cap (too noisy on a loaded
2-core machine to be the default). Figures: docs/design/rate-limiter.md, "The bench's local stack".
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local_stack.stack import LocalStack, seed_samples


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


def _client_process(
    env: dict[str, str],
    images: list[dict[str, Any]],
    operation: str,
    threads: int,
    *,
    seconds: float,
    start: Any,
    results: Any,
) -> None:
    """One client process: its own boto3 client and threads; warms up, waits for the others, measures."""
    os.environ.update(env)
    client = boto3.client(
        "rekognition", config=Config(max_pool_connections=threads, retries={"total_max_attempts": 1})
    )
    run(client, images, operation, threads, 0.5)  # warm: pools, analysis cache
    start.wait()
    results.put(run(client, images, operation, threads, seconds))


def run_processes(
    env: dict[str, str],
    images: list[dict[str, Any]],
    operation: str,
    threads: int,
    *,
    processes: int,
    seconds: float,
) -> tuple[int, int, float, float]:
    """`run` in up to `processes` client processes at once, `threads` threads in all.

    Returns (ok calls, failed calls, elapsed seconds, wall-clock time the measured window started).
    """
    shares = [n for i in range(processes) if (n := threads // processes + (i < threads % processes))]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked locks or pools
    start, results = ctx.Barrier(len(shares) + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=_client_process,
            args=(env, images, operation, n),
            kwargs={"seconds": seconds, "start": start, "results": results},
        )
        for n in shares
    ]
    for proc in procs:
        proc.start()
    start.wait()  # every process has warmed up: measure together
    started = time.time()
    outcomes = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return sum(o[0] for o in outcomes), sum(o[1] for o in outcomes), max(o[2] for o in outcomes), started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=16, help="client threads in all")
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing the threads")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--operation", default="detect_labels")
    parser.add_argument(
        "endpoint_args", nargs="*", help="passed to the endpoint, after --, e.g. -- --tps 100"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack(extra_args=args.endpoint_args) as stack:
        truth = seed_samples(stack.s3_client(), "bench", "in/", Path(tmp))
        good = truth.good()
        modes = {
            "Bytes": [{"Bytes": (Path(tmp) / s.name).read_bytes()} for s in good],
            "S3Object": [{"S3Object": {"Bucket": "bench", "Name": s.key}} for s in good],
        }
        print(
            f"{args.operation}, {args.threads} threads in {args.processes} processes, "
            f"{args.seconds:.0f} s per mode, {len(good)} images, "
            f"endpoint args: {' '.join(args.endpoint_args) or '(none)'}"
        )
        for mode, images in modes.items():
            before = len(stack.calls())
            ok, failed, elapsed, started = run_processes(
                stack.env,
                images,
                args.operation,
                args.threads,
                processes=args.processes,
                seconds=args.seconds,
            )
            # The call log also holds each process's warm-up calls: count only the measured window's.
            logged = [c for c in stack.calls()[before:] if c["ts"] >= started]
            span = logged[-1]["ts"] - logged[0]["ts"] if len(logged) > 1 else elapsed
            mean_ms = sum(c["latency_ms"] for c in logged) / max(1, len(logged))
            print(
                f"{mode:9s} {ok / elapsed:7.1f} calls/s (client)  "
                f"{len(logged) / span:7.1f} calls/s (call log)  "
                f"ok={ok} failed={failed}  server latency {mean_ms:.2f} ms"
            )


if __name__ == "__main__":
    main()
