"""The committed data read back: exactly the files committed manifests list, never a glob of the output.

A glob would read what no run committed: the files of a crashed or losing attempt, a file a re-run task
was rewriting, stray `_x.parquet` files. `read_committed` gives pyarrow tables, `committed_state` what
committed runs settled (for incremental runs); the query views are `batch.query.views`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from batch.core.errors import OutputUnwritable
from batch.core.incremental import CommittedState
from batch.core.manifest import FileEntry, Manifest
from batch.core.tables import PARTITION_COLUMN
from batch.storage.commits import READ_THREADS, RunStore

__all__ = ["committed_state", "read_committed"]


def read_committed(
    store: RunStore, manifests: Sequence[Manifest], table: str, columns: Sequence[str] | None = None
) -> Iterator[pa.Table]:
    """The committed files of `table`, one pyarrow table each (only `columns` if given), with `dt`."""
    files = [entry for manifest in manifests for entry in manifest.files_of(table)]

    def read(entry: FileEntry) -> pa.Table:
        body = store.read(entry.path)
        if body is None:
            raise OutputUnwritable(f"{store.destination.location(entry.path)} is committed but missing")
        data = pq.read_table(io.BytesIO(body), columns=list(columns) if columns else None)
        dt = entry.path.split("/")[1].removeprefix(f"{PARTITION_COLUMN}=")
        return data.append_column(PARTITION_COLUMN, pa.array([dt] * data.num_rows, pa.string()))

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        yield from pool.map(read, files)


def committed_state(store: RunStore, manifests: Sequence[Manifest]) -> CommittedState:
    """What committed runs settled, from the `analyses_done` column of their `images` files."""
    state = CommittedState()
    for data in read_committed(store, manifests, "images", ["key", "etag", "analyses_done"]):
        for key, etag, done in zip(
            *(data.column(n).to_pylist() for n in ("key", "etag", "analyses_done")), strict=True
        ):
            state.add(key, etag, ((d["analysis"], d["settings_digest"]) for d in done or ()))
    return state
