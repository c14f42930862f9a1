"""The committed data read back: exactly the files committed manifests list, never a glob of the output.

A glob would read what no run committed: the files of a crashed or losing attempt, a file a re-run task
was rewriting, stray `_x.parquet` files. `read_committed` gives pyarrow tables, `committed_dataset` a lazy
dataset of an S3 output's committed files (for the query views, `batch.query.views`), `committed_state`
what committed runs settled (for incremental runs). A committed file that is missing (deleted by hand or
by a lifecycle rule) is an `OutputUnreadable` naming the run and the file (`missing_file`,
`check_committed`), never a reader's traceback.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batch.aws.s3files import read_only_filesystem
from batch.core.errors import OutputUnreadable
from batch.core.incremental import CommittedState
from batch.core.manifest import FileEntry, Manifest
from batch.core.tables import PARTITION_COLUMN
from batch.storage.commits import READ_THREADS, RunStore

__all__ = ["check_committed", "committed_dataset", "committed_state", "missing_file", "read_committed"]


def missing_file(store: RunStore, run_id: str, entry: FileEntry, count: int = 1) -> OutputUnreadable:
    """The one-line error of a committed file of run `run_id` that is not there (`count`: how many are)."""
    also = f" ({count} of its files are)" if count > 1 else ""
    return OutputUnreadable(
        f"run {run_id}: committed file {store.destination.location(entry.path)} is missing{also}"
    )


def check_committed(store: RunStore, manifests: Sequence[Manifest]) -> None:
    """Raise `missing_file` for the first run (in commit order) with a committed file that is missing or
    of another size, before a reader that would fail on it (DuckDB's views) is built."""
    missing = {entry.path for entry in store.missing(e for m in manifests for e in m.files)}
    for manifest in manifests:
        gone = [entry for entry in manifest.files if entry.path in missing]
        if gone:
            raise missing_file(store, manifest.run_id, gone[0], len(gone))


def read_committed(
    store: RunStore, manifests: Sequence[Manifest], table: str, columns: Sequence[str] | None = None
) -> Iterator[pa.Table]:
    """The committed files of `table`, one pyarrow table each (only `columns` if given), with `dt`."""
    files = [(manifest.run_id, entry) for manifest in manifests for entry in manifest.files_of(table)]

    def read(run_entry: tuple[str, FileEntry]) -> pa.Table:
        run_id, entry = run_entry
        body = store.read(entry.path)
        if body is None:
            raise missing_file(store, run_id, entry)
        # One file per thread of ours, without pyarrow's pools: with them, a command's exit aborted now
        # and then ("terminate called without an active exception", exit 134 instead of its own).
        data = pq.read_table(
            io.BytesIO(body), columns=list(columns) if columns else None, use_threads=False, pre_buffer=False
        )
        dt = _partition(entry)
        return data.append_column(PARTITION_COLUMN, pa.array([dt] * data.num_rows, pa.string()))

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        yield from pool.map(read, files)


def committed_dataset(
    store: RunStore, manifests: Sequence[Manifest], table: str, schema: pa.Schema
) -> ds.Dataset:
    """The committed files of `table` on S3 as a lazy pyarrow dataset, `dt` included, read in place.

    Exactly the files the manifests list (sizes from them too), read by ranged GETs through the store's
    boto3 client (`batch.aws.s3files`): a scan reads only the columns and row groups it asks for. Files
    written before a column existed read as null in it. Call `check_committed` first: a file missing
    here fails the scan, not this call.
    """
    parquet = ds.ParquetFileFormat()
    entries = [entry for manifest in manifests for entry in manifest.files_of(table)]
    paths = [store.destination.location(entry.path).removeprefix("s3://") for entry in entries]
    sizes = {path: entry.size_bytes for path, entry in zip(paths, entries, strict=True)}
    filesystem = read_only_filesystem(store.s3_client, sizes)
    fragments = [
        parquet.make_fragment(
            path,
            filesystem,
            partition_expression=ds.field(PARTITION_COLUMN) == _partition(entry),
            file_size=entry.size_bytes,
        )
        for path, entry in zip(paths, entries, strict=True)
    ]
    full = pa.schema([*schema, pa.field(PARTITION_COLUMN, pa.string())])
    return ds.FileSystemDataset(fragments, full, parquet, filesystem)


def _partition(entry: FileEntry) -> str:
    """The `dt` of a committed file, from its path (`<table>/dt=<date>/<name>.parquet`)."""
    return entry.path.split("/")[1].removeprefix(f"{PARTITION_COLUMN}=")


def committed_state(store: RunStore, manifests: Sequence[Manifest]) -> CommittedState:
    """What committed runs settled, from the `analyses_done` column of their `images` files."""
    state = CommittedState()
    for data in read_committed(store, manifests, "images", ["key", "etag", "analyses_done"]):
        for key, etag, done in zip(
            *(data.column(n).to_pylist() for n in ("key", "etag", "analyses_done")), strict=True
        ):
            state.add(key, etag, ((d["analysis"], d["settings_digest"]) for d in done or ()))
    return state
