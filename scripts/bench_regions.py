"""Two regions beside one: the job's utilisation of the sum of two regions' quotas (issue 22, "make bench").

    python scripts/bench_regions.py [--images M] [--quota Q] [--analyses A] [--workers W] [--quick]

One LocalStack whose one endpoint holds us-east-1 and us-west-2 (the region each request is signed for)
to Q calls/s per operation each (token bucket of capacity 10; 100 ms + uniform(0, 200) ms per answer),
seeded with M distinct small JPEGs in a us-east-1 bucket, its caches warmed. Two workloads in the same
invocation: the job in us-east-1 alone, then with `--regions us-east-1,us-west-2`. No quota is given to
the job: it reads each region's from the endpoint's Service Quotas. Every figure comes from the
endpoint's call log over the workload's active span (its first call to its last): per operation, the
successful calls per second over the span / the sum of the quotas of the regions used; the throttled
share of all calls; each region's share of the calls and how they were sent. See docs/design/regions.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_job import BUCKET, LATENCY_ARGS, PREFIX, SHORT, make_images, upload, warm_up

from local_stack.stack import LocalStack

HOME, OTHER = "us-east-1", "us-west-2"
THROTTLED = ("ProvisionedThroughputExceededException", "ThrottlingException")
JOB_TIMEOUT = 600.0


def run_job(name: str, workdir: Path, env: dict[str, str], args: argparse.Namespace, *regions: str) -> dict:
    """The job as a subprocess over the bucket, with `--regions` when given; its summary JSON."""
    config, summary = workdir / f"{name}.toml", workdir / f"summary-{name}.json"
    config.write_text(
        f"[dask]\nn_workers = {args.workers}\nthreads_per_worker = 2\nbatch_size = 10\n\n"
        "[rekognition]\nread_timeout = 10.0\n"
    )
    command = [sys.executable, "-m", "batch", "run", "--config", str(config),
               "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(workdir / f"out-{name}"),
               "--analyses", args.analyses, "--summary-json", str(summary)]  # fmt: skip
    if regions:
        command += ["--regions", ",".join(regions)]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT, check=False
    )
    if result.returncode != 0:
        sys.exit(f"{name}: the job exited with {result.returncode}\n{result.stdout}\n{result.stderr}")
    return dict(json.loads(summary.read_text()))


def figures(calls: list[dict[str, Any]], operations: list[str], quota_sum: float) -> dict[str, Any]:
    """One workload's figures from its slice of the call log."""
    first, last = min(c["ts"] for c in calls), max(c["ts"] for c in calls)
    span = last - first
    ok = [c for c in calls if c["outcome"] == "ok"]
    util = {op: sum(c["operation"] == op for c in ok) / span / quota_sum for op in operations}
    # The middle half of the span: the steady state, without the cluster's first calls and the tail.
    middle = [c for c in ok if first + span / 4 <= c["ts"] <= last - span / 4]
    steady = min(sum(c["operation"] == op for c in middle) / (span / 2) / quota_sum for op in operations)
    throttled = sum(c["outcome"] in THROTTLED for c in calls)
    by_region = Counter(c["region"] for c in ok)
    sent = Counter((c["region"], c["source"]) for c in ok)
    return {
        "quota sum, calls/s per op": f"{quota_sum:g}",
        "calls ok / all": f"{len(ok)} / {len(calls)}",
        "active span s": f"{span:.1f}",
        **{f"util {SHORT[op]}": f"{u:.3f}" for op, u in util.items()},
        "util min": f"{min(util.values()):.3f}",
        "util min, middle half of the span": f"{steady:.3f}",
        "throttled share": f"{throttled / len(calls):.4%}",
        "calls by region": ", ".join(f"{r} {n / len(ok):.1%}" for r, n in sorted(by_region.items())),
        "sent as": ", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(sent.items())),
        "_util_min": min(util.values()),
        "_throttled": throttled / len(calls),
    }


def print_table(columns: dict[str, dict[str, Any]]) -> None:
    rows = [key for key in next(iter(columns.values())) if not key.startswith("_")]
    width = max(len(row) for row in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{name:<36}" for name in columns))
    for row in rows:
        print(f"{row:<{width}}  " + "  ".join(f"{col[row]!s:<36}" for col in columns.values()))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000, help="distinct images (default 1000)")
    p.add_argument("--quota", type=float, default=50.0, help="each region's calls/s per operation")
    p.add_argument("--analyses", default="labels,faces,text,moderation,celebrities")
    p.add_argument("--workers", type=int, default=2, help="the job's LocalCluster worker processes")
    p.add_argument("--quick", action="store_true", help="a smoke run: 100 images")
    args = p.parse_args()
    if args.quick:
        args.images = 100
    return args


def main() -> None:
    args = parse_args()
    operations = [op for op, short in SHORT.items() if short in args.analyses.split(",")]
    extra = [*LATENCY_ARGS, "--quota-per-region", f"{OTHER}={args.quota:g}"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-regions-") as tmp,
        LocalStack(tps=args.quota, burst=10.0, extra_args=extra) as stack,
    ):
        upload(stack.s3_client(), make_images(args.images))
        os.environ.update(stack.env)
        print(f"seeded {args.images} images; warmed the endpoint in {warm_up(args.images, args.quota):.1f} s")
        env = {**os.environ, **stack.env, "AWS_DEFAULT_REGION": HOME}
        columns = {}
        for name, regions in (("one region (us-east-1)", ()), ("two regions", (HOME, OTHER))):
            before = len(stack.calls())
            started = time.monotonic()
            summary = run_job(name.split(" ")[0], Path(tmp), env, args, *regions)
            calls = [c for c in stack.calls()[before:] if c["operation"] in operations]
            columns[name] = {
                **figures(calls, operations, args.quota * max(1, len(regions))),
                "images analysed": summary["images"]["analysed"],
                "wall s": f"{time.monotonic() - started:.1f}",
            }
    print(f"\n{args.images} images, {args.analyses}; each region {args.quota:g} calls/s per operation")
    print_table(columns)
    two = columns["two regions"]
    verdicts = (
        ("two regions: utilisation of the sum >= 0.95", two["_util_min"] >= 0.95),
        ("two regions: throttled share <= 0.5 %", two["_throttled"] <= 0.005),
    )
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
