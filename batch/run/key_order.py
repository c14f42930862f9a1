"""The input in key order, whatever its source: the merge-join with the settled state's snapshot
(`batch.core.sorted_state`) walks both in UTF-8 binary key order. ListObjectsV2 lists in that order;
an S3 Inventory report does not, so its objects are sorted out of core first (`sorted_batches`), an
external merge sort: record batches gathered up to `RUN_BYTES`, each run sorted in Arrow and written to
a temp Parquet file, then the runs merged a record batch of each at a time. Memory is bounded by
`RUN_BYTES` and the runs' read buffers whatever the keys' length (DuckDB's spilling sort ran out of its
128 MB at 4M keys of 35 bytes, or 500k of 300). See docs/design/state.md.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
from collections.abc import Iterable, Iterator
from operator import attrgetter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.core.errors import InputUnreachable
from batch.core.inventory_batches import OBJECTS, objects_batch
from batch.core.redaction import one_line
from batch.core.selection import ListedObject

__all__ = ["sorted_batches", "sorted_by_key"]

#: Objects per record batch handed to the sort (`sorted_by_key`).
CHUNK_ROWS = 50_000
#: Arrow bytes of objects sorted in memory at once: one run (a temp file) each.
RUN_BYTES = 32 * 2**20
#: Rows per row group of a run, and per record batch read back from each run while merging.
READ_ROWS = 1_024
#: Runs merged at once: more are first merged into longer runs, so the read buffers stay bounded.
FAN_IN = 64


def sorted_by_key(objects: Iterable[ListedObject]) -> Iterator[ListedObject]:
    """`objects` in UTF-8 binary key order (Arrow compares strings bytewise, as S3 lists them)."""
    return sorted_batches(_as_batches(objects))


def sorted_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[ListedObject]:
    """The objects of `batches` (`OBJECTS`' schema) in UTF-8 binary key order. Python compares str by
    code point, the same order as UTF-8's bytes, so the merge keeps the runs' order."""
    with tempfile.TemporaryDirectory(prefix="rekbatch-sort-") as work:
        folder = Path(work)
        try:
            runs = _sorted_runs(batches, folder)
            for level in itertools.count():  # a queue: each object is written again log(runs) times
                if len(runs) <= FAN_IN:
                    break
                runs = [*runs[FAN_IN:], _merged_run(runs[:FAN_IN], folder / f"merged-{level:05d}.parquet")]
        except OSError as exc:  # the temp folder is full or cannot be written
            raise InputUnreachable(
                f"run.inventory: cannot sort the inventory in {folder}: {one_line(str(exc))}"
            ) from None
        yield from _merged(runs)


def _sorted_runs(batches: Iterable[pa.RecordBatch], folder: Path) -> list[Path]:
    """Write the objects of `batches` as sorted runs of about `RUN_BYTES` each; their paths."""
    runs: list[Path] = []
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in itertools.chain(batches, [None]):
        if batch is not None:
            pending.append(batch)
            held += batch.nbytes
        if pending and (batch is None or held >= RUN_BYTES):
            table = pa.Table.from_batches(pending, OBJECTS)
            run = folder / f"run-{len(runs):05d}.parquet"
            pq.write_table(table.take(pc.sort_indices(table, [("key", "ascending")])), run,
                           row_group_size=READ_ROWS, compression="zstd")  # fmt: skip
            runs.append(run)
            pending, held = [], 0
    return runs


def _merged(runs: list[Path]) -> Iterator[ListedObject]:
    return heapq.merge(*(_objects(run) for run in runs), key=attrgetter("key"))


def _merged_run(runs: list[Path], out: Path) -> Path:
    """Merge sorted `runs` into one run at `out`, deleting them."""
    with pq.ParquetWriter(out, OBJECTS, compression="zstd") as writer:
        merged = _merged(runs)
        while chunk := list(itertools.islice(merged, READ_ROWS)):
            writer.write_batch(objects_batch(chunk), row_group_size=READ_ROWS)
    for run in runs:
        run.unlink()
    return out


def _objects(run: Path) -> Iterator[ListedObject]:
    """The objects of one sorted run, a record batch at a time."""
    for batch in pq.ParquetFile(run).iter_batches(batch_size=READ_ROWS, use_threads=False):
        columns = [batch.column(i).to_pylist() for i in range(len(OBJECTS))]
        yield from itertools.starmap(ListedObject, zip(*columns, strict=True))


def _as_batches(objects: Iterable[ListedObject]) -> Iterator[pa.RecordBatch]:
    """The objects as record batches of `CHUNK_ROWS`."""
    iterator = iter(objects)
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        yield objects_batch(chunk)
