"""`make bench-scale`: the driver's planning path at 100k, 1M and 10M keys, after 1 and 365 committed runs.

For each size N it builds a synthetic committed history in a local output folder through the job's
own writers (`write_tables`, `RunStore.commit`, and the snapshot step a commit runs:
`batch.run.commit.write_snapshot`; no Rekognition call): run 1 settles every key (labels), each later
run r re-settles the 1 % of keys with `i % 100 == r % 100` under a new ETag. Then a fresh process plans
a run over N keys of which 1 % changed since (the key-ordered listing, generated as ListObjectsV2 pages
would stream it, or with `--input inventory` the same objects unordered in the gzipped CSV data files
of an S3 Inventory, as AWS writes them (keys URL-encoded, every value quoted; written before the
process starts), read, selected and sorted out of core as the run reads an inventory), and prints:
the driver's peak RSS, the time from the process's start to its first planned batch (`first call`:
start-up, state, listing, plan), and keys planned per second over the whole listing. The history's
later runs are committed without a snapshot each and one snapshot step after the last commit (the
same snapshot a snapshot per commit leaves; `snapshot s`: that step's time). `--tree PATH` plans with
another checkout's code (e.g. the code before the snapshot, which reads every committed run's `images`
files). See docs/design/state.md.

    python scripts/bench_scale.py --sizes 100k,1M,10M [--runs 365] [--input listing|inventory]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_ROWS = 250_000
BATCH = 4
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WHEN = f"{T0:%Y-%m-%dT%H:%M:%S}.000Z"  # T0 as a CSV inventory writes it


def size(text: str) -> int:
    units = {"k": 1_000, "m": 1_000_000}
    return int(float(text[:-1]) * units[text[-1].lower()]) if text[-1].lower() in units else int(text)


def key(i: int) -> str:
    return f"photos/{i // 1000:07d}/{i:010d}.jpg"


def etag_after(i: int, runs: int) -> str:
    """The ETag of key i once `runs` runs are committed (run r >= 2 changed the keys with i%100 == r%100)."""
    m = i % 100
    last = m + 100 * ((runs - m) // 100) if runs >= m else 1
    return f"e{last if last >= 2 else 1}"


def run_keys(run: int, n: int) -> Iterator[int]:
    return iter(range(n)) if run == 1 else (i for i in range(run % 100, n, 100))


def commit_run(out: Path, run: int, n: int, *, snapshot: bool) -> None:
    """Run `run`'s images files and manifest, as the job writes them; then the commit's snapshot step."""
    from batch.analyses.registry import all_tables
    from batch.core.manifest import Manifest, data_file_name
    from batch.run.commit import write_snapshot
    from batch.storage.commits import RunStore
    from batch.storage.sink import Destination, write_tables

    store = RunStore(Destination(str(out)))
    run_id, at = f"r{run:04d}", T0 + timedelta(days=run)
    done = [{"analysis": "labels", "settings_digest": "L1"}]
    files, keys, batch = [], run_keys(run, n), 0
    while chunk := _take(keys, FILE_ROWS):
        rows = [
            {"run_id": run_id, "bucket": "b", "key": key(i), "etag": f"e{run}", "status": "analysed",
             "analyses": ["labels"], "analyses_done": done}
            for i in chunk
        ]  # fmt: skip
        files += write_tables(
            store.destination, {"images": rows}, all_tables(), dt=f"{at:%Y-%m-%d}",
            name=data_file_name(run_id, 1, batch), compression="zstd",
        )  # fmt: skip
        batch += 1
    manifest = Manifest(run_id, 1, (1,), at, at, f"{at:%Y-%m-%d}", "s3://b/photos/", "c", {"labels": "L1"},
                        tuple(files), {"listed": n})  # fmt: skip
    assert store.commit(manifest)
    if snapshot:
        write_snapshot(store)


def _take(iterator: Iterator[int], count: int) -> list[int]:
    out = []
    for value in iterator:
        out.append(value)
        if len(out) == count:
            break
    return out


def listing(n: int, runs: int, *, ordered: bool) -> Iterator:
    """The N objects of the next run: 1 % changed since run `runs` (i % 100 == (runs+1) % 100)."""
    from batch.core.selection import ListedObject

    order = range(n) if ordered else (i * 7919 % n for i in range(n))  # a permutation when 7919 ∤ n
    fresh = (runs + 1) % 100
    for i in order:
        etag = f"e{runs + 1}" if i % 100 == fresh else etag_after(i, runs)
        yield ListedObject(key(i), etag, 1000, T0)


INVENTORY_COLUMNS = ("bucket", "key", "size", "last_modified_date", "e_tag", "storage_class")


def write_inventory(folder: Path, n: int, runs: int) -> None:
    """`listing(n, runs, ordered=False)` as the gzipped CSV data files of an inventory, FILE_ROWS each."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from local_stack.inventory import encode_key

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    objects, part = listing(n, runs, ordered=False), 0
    while chunk := list(itertools.islice(objects, FILE_ROWS)):
        table = pa.table(
            {"bucket": ["b"] * len(chunk), "key": [encode_key(o.key) for o in chunk],
             "size": [str(o.size) for o in chunk], "last_modified_date": [WHEN] * len(chunk),
             "e_tag": [o.etag for o in chunk], "storage_class": ["STANDARD"] * len(chunk)}
        )  # fmt: skip
        with pa.CompressedOutputStream(str(folder / f"{part:05d}.csv.gz"), "gzip") as out:
            options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
            pa_csv.write_csv(table, out, write_options=options)
        part += 1


def inventory_listing(folder: Path) -> Iterator:
    """The inventory's objects in key order, as the run reads them (or, with the code before the
    vectorised reader, row by row through `listed_object`)."""
    from batch.config.model import InputConfig
    from batch.core.inventory import InventoryManifest

    manifest = InventoryManifest("b", "d", "CSV", INVENTORY_COLUMNS, ())
    files = sorted(folder.glob("*.csv.gz"))
    try:
        from batch.aws.inventory import file_batches
        from batch.run.key_order import sorted_batches
    except ImportError:  # the code before: a Python object per row before the sort
        from batch.aws.inventory import _batches
        from batch.core.inventory import listed_object
        from batch.core.selection import is_selected
        from batch.run.key_order import sorted_by_key

        rows = (row for path in files for rows in _batches(path, manifest) for row in rows)
        objects = (listed_object(row, url_encoded=True) for row in rows)
        return sorted_by_key(o for o in objects if o and is_selected(o, "photos/", InputConfig()))
    return sorted_batches(b for path in files for b in file_batches(path, manifest, "photos/", InputConfig()))


def plan(out: Path, n: int, runs: int, source: str, spawned: float) -> dict:
    """In this process: the state, the listing and the plan, as a run's driver does them (seconds from
    `spawned`, the wall clock when the parent started this process)."""
    from contextlib import ExitStack

    from batch.core.manifest import Ledger
    from batch.run.plan import batched, plan_images
    from batch.storage.commits import RunStore
    from batch.storage.sink import Destination

    started = time.monotonic()
    store = RunStore(Destination(str(out)))
    with ExitStack() as stack:
        try:
            from batch.storage.snapshot import load_state

            state = load_state(store, store.manifests(), stack)
        except ImportError:  # the code before the snapshot
            from batch.storage.readers import committed_state

            state = committed_state(store, store.manifests())
        state_s = time.monotonic() - started
        if source == "inventory":
            objects = inventory_listing(out / "inventory")
        else:
            objects = listing(n, runs, ordered=True)
        first, sent = None, 0
        for batch in batched(plan_images(objects, Ledger(), state, {"labels": "L1"}), lambda: BATCH):
            first = first or time.time() - spawned
            sent += len(batch)
    total = time.monotonic() - started
    return {"state_s": state_s, "first_call_s": first, "total_s": total, "keys_per_s": n / total,
            "peak_mb": peak_rss_mb(), "sent": sent}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(out: Path, n: int, runs: int, source: str, tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--plan", str(out), "--n", str(n), "--runs", str(runs),
               "--input", source, "--spawned", repr(time.time())]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def build(out: Path, n: int, runs: int, start: int) -> float:
    """Commit runs `start`..`runs`, the snapshot step after the last only; its seconds."""
    for run in range(start, runs + 1):
        commit_run(out, run, n, snapshot=False)
    from batch.run.commit import write_snapshot
    from batch.storage.commits import RunStore
    from batch.storage.sink import Destination

    began = time.monotonic()
    write_snapshot(RunStore(Destination(str(out))))
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1M,10M")
    parser.add_argument("--runs", type=int, default=365, help="committed runs before the last measure")
    parser.add_argument("--input", choices=("listing", "inventory"), default="listing")
    parser.add_argument("--tree", type=Path, action="append", help="checkouts to plan with (default: this)")
    parser.add_argument("--work", type=Path, help="where the histories are built (default: a temp folder)")
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plan:
        print(json.dumps(plan(args.plan, args.n, args.runs, args.input, args.spawned)))
        return
    trees = args.tree or [ROOT]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"{'N':>10} {'runs':>5} {'tree':<14} {'peak MB':>8} {'state s':>8} {'first call s':>12} "
          f"{'keys/s':>9} {'snapshot s':>10}")  # fmt: skip
    for n in (size(s) for s in args.sizes.split(",")):
        out = work / f"n{n}"
        shutil.rmtree(out, ignore_errors=True)
        built = 0
        for runs in sorted({1, args.runs}):
            snapshot_s = build(out, n, runs, built + 1)
            built = runs
            if args.input == "inventory":
                write_inventory(out / "inventory", n, runs)
            for tree in trees:
                got = measure(out, n, runs, args.input, tree)
                print(f"{n:>10,} {runs:>5} {tree.name[:14]:<14} {got['peak_mb']:>8.0f} "
                      f"{got['state_s']:>8.2f} {got['first_call_s']:>12.2f} {got['keys_per_s']:>9,.0f} "
                      f"{snapshot_s:>10.2f}", flush=True)  # fmt: skip
        if not args.work:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
