"""The input in key order, whatever its source: the merge-join with the settled state's snapshot
(`batch.core.sorted_state`) walks both in UTF-8 binary key order. ListObjectsV2 lists in that order;
an S3 Inventory report does not, so its objects are sorted out of core first (`sorted_batches`): its
record batches streamed into DuckDB (an Arrow scan, no Python object per row), sorted under a memory
limit (it spills to a temp folder) into one Parquet file, read back a record batch at a time. See
docs/design/state.md.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.core.errors import InputUnreachable
from batch.core.inventory_batches import OBJECTS, objects_batch
from batch.core.redaction import one_line
from batch.core.selection import ListedObject

__all__ = ["sorted_batches", "sorted_by_key"]

#: Objects per record batch handed to the sort (`sorted_by_key`), and per record batch read back.
CHUNK_ROWS = 50_000
#: DuckDB's memory for the sort (beyond it, it spills to the temp folder).
SORT_MEMORY = "128MB"

_SORT = "COPY (SELECT * FROM objects ORDER BY key) TO '{out}' (FORMAT parquet)"


def sorted_by_key(objects: Iterable[ListedObject]) -> Iterator[ListedObject]:
    """`objects` in UTF-8 binary key order (DuckDB compares strings bytewise, as S3 lists them)."""
    return sorted_batches(_as_batches(objects))


def sorted_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[ListedObject]:
    """The objects of `batches` (`OBJECTS`' schema) in UTF-8 binary key order."""
    import duckdb  # only for an inventory

    with tempfile.TemporaryDirectory(prefix="rekbatch-sort-") as work:
        folder = Path(work)
        done = folder / "sorted.parquet"
        failed: list[BaseException] = []
        objects = pa.RecordBatchReader.from_batches(OBJECTS, _noting(batches, failed))
        with duckdb.connect() as con:
            con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
            con.execute(f"SET temp_directory = '{_quoted(str(folder / 'spill'))}'")
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET threads = 2")
            con.register("objects", objects)
            try:
                con.execute(_SORT.format(out=_quoted(str(done))))
            except duckdb.Error as exc:
                if (
                    failed
                ):  # the input's own error (an inventory refused, a signal), not DuckDB's wrapping of it
                    raise failed[0] from None
                if isinstance(exc, duckdb.IOException):  # the temp folder is full or cannot be written
                    raise InputUnreachable(
                        f"run.inventory: cannot sort the inventory in {folder}: {one_line(str(exc))}"
                    ) from None
                raise
        for batch in pq.ParquetFile(done).iter_batches(batch_size=CHUNK_ROWS):
            columns = [batch.column(i).to_pylist() for i in range(len(OBJECTS))]
            yield from itertools.starmap(ListedObject, zip(*columns, strict=True))


def _noting(batches: Iterable[pa.RecordBatch], failed: list[BaseException]) -> Iterator[pa.RecordBatch]:
    """`batches`, noting in `failed` the exception that ends them."""
    try:
        yield from batches
    except (Exception, KeyboardInterrupt) as exc:  # a signal's too (`Shutdown`), not GeneratorExit
        failed.append(exc)
        raise


def _as_batches(objects: Iterable[ListedObject]) -> Iterator[pa.RecordBatch]:
    """The objects as record batches of `CHUNK_ROWS`."""
    iterator = iter(objects)
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        yield objects_batch(chunk)


def _quoted(text: str) -> str:
    return text.replace("'", "''")
