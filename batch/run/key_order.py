"""The input in key order, whatever its source: the merge-join with the settled state's snapshot
(`batch.core.sorted_state`) walks both in UTF-8 binary key order. ListObjectsV2 lists in that order;
an S3 Inventory report does not, so its objects are sorted out of core first (`sorted_by_key`): written
to Parquet files in a temp folder a chunk at a time, sorted by DuckDB under a memory limit (it spills to
the same folder) into one Parquet file, read back a record batch at a time. See docs/design/state.md.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.core.selection import ListedObject

__all__ = ["sorted_by_key"]

#: Objects per Parquet file written, and per record batch read back.
CHUNK_ROWS = 50_000
#: DuckDB's memory for the sort (beyond it, it spills to the temp folder).
SORT_MEMORY = "128MB"

_SORT = "COPY (SELECT * FROM read_parquet(?) ORDER BY key) TO '{out}' (FORMAT parquet)"
_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("etag", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("last_modified", pa.timestamp("us", tz="UTC")),
        pa.field("version", pa.string()),
    ]
)


def sorted_by_key(objects: Iterable[ListedObject]) -> Iterator[ListedObject]:
    """`objects` in UTF-8 binary key order (DuckDB compares strings bytewise, as S3 lists them)."""
    import duckdb  # only for an inventory

    with tempfile.TemporaryDirectory(prefix="rekbatch-sort-") as work:
        folder = Path(work)
        files = _spill(objects, folder)
        if not files:
            return
        done = folder / "sorted.parquet"
        with duckdb.connect() as con:
            con.execute(f"SET memory_limit = '{SORT_MEMORY}'")
            con.execute(f"SET temp_directory = '{_quoted(str(folder / 'spill'))}'")
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET threads = 2")
            con.execute(_SORT.format(out=_quoted(str(done))), [[str(f) for f in files]])
        for path in files:
            path.unlink()
        for batch in pq.ParquetFile(done).iter_batches(batch_size=CHUNK_ROWS):
            columns = [batch.column(i).to_pylist() for i in range(len(_SCHEMA))]
            yield from itertools.starmap(ListedObject, zip(*columns, strict=True))


def _spill(objects: Iterable[ListedObject], folder: Path) -> list[Path]:
    """The objects in Parquet files under `folder`, `CHUNK_ROWS` each."""
    files: list[Path] = []
    iterator = iter(objects)
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        path = folder / f"{len(files):06d}.parquet"
        columns = [[getattr(obj, field.name) for obj in chunk] for field in _SCHEMA]
        pq.write_table(pa.table(columns, schema=_SCHEMA), path, compression="none")
        files.append(path)
    return files


def _quoted(text: str) -> str:
    return text.replace("'", "''")
