"""How `rekbatch sql` over an s3:// output scales with the committed history (issue 21, "Readers at scale").

    python scripts/bench_readers.py [--runs N] [--images M] [--files F] [--tree DIR ...]

One LocalStack (moto). It commits N synthetic nightly runs under s3://bench-output/results/, each of M
images in F batch files per table (`images`, and `labels` with five labels per image), written through the
job's own writers (`parquet_bytes`, `Destination.publish`, `RunStore.commit`) with zstd, no Rekognition
call. Then, for each `--tree DIR` (default: the `batch` on PYTHONPATH), it runs `python -m batch sql` of a
count by label over the whole history in a fresh process and prints its wall time, peak RSS (the child's
own, from wait4) and answer. See docs/design/readers.md for the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from batch.analyses.registry import all_tables
from batch.core.manifest import FileEntry, Manifest, data_file_name
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, parquet_bytes
from local_stack.stack import LocalStack

BUCKET, ROOT = "bench-output", "results"
QUERY = "SELECT name, count(*) AS n FROM labels GROUP BY name ORDER BY n DESC, name LIMIT 5"
LABELS_PER_IMAGE, VOCABULARY = 5, 400


def synthetic_batch(run: int, batch: int, images: int, rng: np.random.Generator) -> dict[str, pa.Table]:
    """An `images` and a `labels` table for one batch, with random keys, etags and confidences."""
    schemas = all_tables()
    run_id = f"run-{run:04d}"
    keys = [
        f"photos/{run:04d}/{batch:04d}/{n:06d}-{h:016x}.jpg"
        for n, h in enumerate(rng.integers(0, 2**63, images))
    ]
    etags = [f"{h:032x}" for h in rng.integers(0, 2**63, images)]
    images_table = pa.table(
        {
            "run_id": [run_id] * images,
            "bucket": ["bench-input"] * images,
            "key": keys,
            "etag": etags,
            "size_bytes": rng.integers(50_000, 5_000_000, images),
            "status": ["analysed"] * images,
            "analyses_done": [[{"analysis": "labels", "settings_digest": "abc123"}]] * images,
        }
    )
    repeat = np.repeat(np.arange(images), LABELS_PER_IMAGE)
    names = [f"label-{n:03d}" for n in rng.zipf(1.3, len(repeat)) % VOCABULARY]
    labels_table = pa.table(
        {
            "run_id": [run_id] * len(repeat),
            "bucket": ["bench-input"] * len(repeat),
            "key": pa.array(keys).take(repeat),
            "etag": pa.array(etags).take(repeat),
            "name": names,
            "confidence": rng.uniform(50, 100, len(repeat)),
            "parents": [[f"label-{n % VOCABULARY:03d}"] for n in rng.integers(0, 10_000, len(repeat))],
            "model_version": ["3.0"] * len(repeat),
        }
    )
    return {
        name: table.select([f.name for f in schemas[name] if f.name in table.column_names]).cast(
            pa.schema([f for f in schemas[name] if f.name in table.column_names])
        )
        for name, table in (("images", images_table), ("labels", labels_table))
    }


def commit_history(store: RunStore, runs: int, images: int, files: int) -> int:
    """Commit `runs` runs; return the bytes of Parquet written."""
    rng = np.random.default_rng(21)
    written = 0
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for run in range(runs):
        at = start + timedelta(days=run)
        dt, run_id, entries = at.date().isoformat(), f"run-{run:04d}", []
        for batch in range(files):
            for table, data in synthetic_batch(run, batch, images // files, rng).items():
                body = parquet_bytes(data, "zstd")
                relative = store.destination.relative_path(table, dt, data_file_name(run_id, 1, batch))
                store.destination.publish(relative, body, store.s3_client)
                entries.append(
                    FileEntry(table, relative, data.num_rows, hashlib.sha256(body).hexdigest(), len(body))
                )
                written += len(body)
        manifest = Manifest(run_id, 1, (1,), at, at, dt, "s3://bench-input/photos/", "digest",
                            {"labels": "abc123"}, tuple(entries), {"listed": images})  # fmt: skip
        assert store.commit(manifest)
    return written


def measure(tree: str | None, env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) and stdout of `python -m batch sql` run from `tree`."""
    if tree:
        env = {**env, "PYTHONPATH": tree}
    command = [sys.executable, "-m", "batch", "sql", "--output", f"s3://{BUCKET}/{ROOT}", "-c", QUERY]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.monotonic()
        # cwd: `python -m` puts it first on sys.path, before PYTHONPATH.
        child = subprocess.Popen(command, env=env, cwd=tree, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak RSS, not the largest child's
        wall = time.monotonic() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode:
            raise SystemExit(f"{tree}: exit {child.returncode}: {err.read().strip()}")
        return wall, usage.ru_maxrss // 1024, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--images", type=int, default=100_000, help="images per run")
    parser.add_argument("--files", type=int, default=10, help="batch files per table per run")
    parser.add_argument("--tree", action="append", help="a source tree to run `batch` from (repeatable)")
    args = parser.parse_args()
    with LocalStack() as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        began = time.monotonic()
        written = commit_history(
            RunStore(Destination(f"s3://{BUCKET}/{ROOT}"), s3), args.runs, args.images, args.files
        )
        labels = args.runs * args.images * LABELS_PER_IMAGE
        print(f"history: {args.runs} runs x {args.images:,} images, {labels:,} label rows, "
              f"{2 * args.runs * args.files} files, {written / 1e6:.0f} MB of Parquet "
              f"({time.monotonic() - began:.0f} s to write)")  # fmt: skip
        env = {**os.environ, **stack.env}
        for tree in args.tree or [None]:
            wall, rss, out = measure(tree, env)
            print(f"{tree or 'PYTHONPATH'}: {wall:.1f} s, peak RSS {rss} MB")
            print(out)


if __name__ == "__main__":
    main()
