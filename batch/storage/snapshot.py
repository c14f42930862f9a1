"""The settled state's snapshot: what committed runs settled, compacted into one Parquet file sorted by key.

`_state/settled-<runs>-<run_id>.parquet` (`runs`: how many committed runs it covers, zero-padded; the
run whose commit wrote it) holds one row per (key, etag) with the settled pairs
(`batch.core.sorted_state.encode_settled`), sorted by (key, etag) in UTF-8 binary order, and in its
Parquet metadata (`covers`) the committed manifests it covers (`covered_id`: a run's segments are
manifests of their own, so a run can be covered in part). `update_snapshot` writes a
new one after each commit: the newest valid snapshot and the `images` files of the committed runs it does
not cover, merged by DuckDB in bounded memory (a memory limit and a temp folder: it spills). A snapshot
decides nothing: it is a cache of what the committed `images` files say. `load_state` takes the newest
one whose runs are all committed, reads the `images` files of the runs committed since (usually none) and
answers by a merge-join (`batch.core.sorted_state.SortedState`); a snapshot missing, unreadable, of
another layout or covering a run that is not committed is passed over for an older one, and without
any, every committed run's `images` files are read (`readers.committed_state`). `Cancel` stops an
`update_snapshot` running in another thread (DuckDB's merge at once). See docs/design/state.md.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch.core.incremental import SettledState
from batch.core.manifest import FileEntry, Manifest, manifest_path
from batch.core.sorted_state import Row, SortedState
from batch.storage.commits import RunStore
from batch.storage.readers import committed_state, missing_file

__all__ = [
    "SNAPSHOT_DIR",
    "SNAPSHOT_SCHEMA",
    "Cancel",
    "Snapshot",
    "load_state",
    "snapshot_path",
    "snapshots",
    "update_snapshot",
]

logger = logging.getLogger(__name__)

SNAPSHOT_DIR = "_state"
SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("etag", pa.string(), nullable=False),
        pa.field("settled", pa.string(), nullable=False),
    ]
)
#: Rows per Parquet row group, and per chunk the merge-join holds.
ROW_GROUP_ROWS = 65_536
#: DuckDB's memory while it merges a snapshot (it spills to a temp folder beyond).
MERGE_MEMORY = "256MB"
_COVERS = b"covers"


class Cancel:
    """Stops an `update_snapshot` running in another thread: before its next step, and DuckDB's merge
    at once (`interrupt`); the stopped one raises `SnapshotCancelled` (or DuckDB's own error)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._connection: Any = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def __call__(self) -> None:
        with self._lock:
            self.event.set()
            if self._connection is not None:
                self._connection.interrupt()

    def check(self) -> None:
        if self.requested:
            raise SnapshotCancelled("cancelled")

    @contextmanager
    def merging(self, connection: Any) -> Iterator[None]:
        """While `connection` merges: a cancel interrupts it."""
        with self._lock:
            self.check()
            self._connection = connection
        try:
            yield
        finally:
            with self._lock:
                self._connection = None


class SnapshotCancelled(Exception):
    """An `update_snapshot` stopped by its `Cancel`."""


def snapshot_path(runs: int, run_id: str) -> str:
    """The snapshot covering `runs` committed runs, written after run `run_id` committed."""
    return f"{SNAPSHOT_DIR}/settled-{runs:08d}-{run_id}.parquet"


def snapshots(store: RunStore) -> list[str]:
    """The snapshot files under the output, newest (most runs covered) first."""
    found = store.destination.list(f"{SNAPSHOT_DIR}/", store.s3_client)
    names = [f.path for f in found if f.path.endswith(".parquet") and "/settled-" in f.path]
    return sorted(names, reverse=True)


@dataclass
class Snapshot:
    """An open snapshot: its Parquet file and the committed runs it covers."""

    path: str
    local: str
    file: pq.ParquetFile
    covers: frozenset[str]

    def rows_from(self, key: str) -> Iterator[Sequence[Row]]:
        """Chunks of rows from the first (`key` is not used to skip row groups: Parquet writers may
        truncate string statistics, and a sorted listing never rewinds)."""
        for batch in self.file.iter_batches(batch_size=ROW_GROUP_ROWS, columns=["key", "etag", "settled"]):
            yield list(zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True))


def covered_id(manifest: Manifest) -> str:
    """A committed manifest's name in a snapshot's `covers`: its path, so one segment of a run
    (`batch.core.segments`) is told from the next, and from the run's final manifest."""
    return manifest_path(manifest.run_id, 0 if manifest.final else manifest.segment)


def load_state(store: RunStore, manifests: Sequence[Manifest], stack: ExitStack) -> SettledState:
    """What the committed runs `manifests` settled: the newest valid snapshot merge-joined, with the
    runs committed after it read whole; every run read whole without one. `stack` holds the open file."""
    committed = {covered_id(m) for m in manifests}
    snapshot = _newest_valid(store, committed, stack)
    if snapshot is None:
        logger.info("state: no snapshot: reading %d committed runs", len(manifests))
        return committed_state(store, manifests)
    later = [m for m in manifests if covered_id(m) not in snapshot.covers]
    logger.info("state: snapshot %s and %d later runs", snapshot.path, len(later))
    return SortedState(snapshot.rows_from, committed_state(store, later))


def _newest_valid(store: RunStore, committed: set[str], stack: ExitStack) -> Snapshot | None:
    """The newest snapshot that opens, has the layout and covers only committed runs."""
    for path in snapshots(store):
        snapshot = _open(store, path, stack)
        if snapshot is not None and snapshot.covers <= committed:
            return snapshot
    return None


def _open(store: RunStore, path: str, stack: ExitStack) -> Snapshot | None:
    """The snapshot at `path`, or None (and a log line) if it cannot serve."""
    try:
        local = _local_copy(store, path, stack)
        file = pq.ParquetFile(local)
        metadata = file.schema_arrow.metadata or {}
        layout = [(field.name, field.type) for field in file.schema_arrow]
        if layout != [(field.name, field.type) for field in SNAPSHOT_SCHEMA] or _COVERS not in metadata:
            raise ValueError("not a snapshot's layout")
        return Snapshot(path, local, file, frozenset(json.loads(metadata[_COVERS])))
    except Exception as exc:  # a cache that cannot serve is passed over, whatever is wrong with it
        logger.warning("state: snapshot %s passed over: %s", path, exc)
        return None


def _local_copy(store: RunStore, path: str, stack: ExitStack) -> str:
    """A local file of `path`: the file itself in a local output, a temp copy (streamed) from S3,
    removed when `stack` closes."""
    destination = store.destination
    if not destination.is_s3:
        return str(Path(destination.root) / path)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rekbatch-state-")))
    copy = folder / Path(path).name
    with copy.open("wb") as out:
        destination.download(path, out, store.s3_client)
    return str(copy)


_MERGE = """
COPY (
  WITH new AS (
    SELECT key, etag, list_distinct(flatten(list(
      list_transform(coalesce(analyses_done, []), lambda d: d.analysis || '=' || d.settings_digest)
    ))) AS pairs
    FROM read_parquet({images}) GROUP BY key, etag
  ), old AS (
    SELECT key, etag, list_filter(string_split(settled, ';'), lambda p: p <> '') AS pairs FROM {base}
  )
  SELECT key, etag, array_to_string(list_sort(list_distinct(
    list_concat(coalesce(old.pairs, []), coalesce(new.pairs, [])))), ';') AS settled
  FROM old FULL OUTER JOIN new USING (key, etag)
  ORDER BY key, etag
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {rows}, KV_METADATA {{covers: '{covers}'}})
"""


def update_snapshot(
    store: RunStore, manifests: Sequence[Manifest], cancel: Cancel | None = None
) -> str | None:
    """Write the snapshot covering every run of `manifests` (the committed ones): the newest valid
    snapshot plus the `images` files of the runs it does not cover. None when there is nothing new to
    merge (the runs since have no `images` files: reading them at start costs nothing)."""
    cancel = cancel or Cancel()
    with ExitStack() as stack:
        base = _newest_valid(store, {covered_id(m) for m in manifests}, stack)
        covered = base.covers if base is not None else frozenset()
        later = [m for m in manifests if covered_id(m) not in covered]
        entries = [(m.run_id, e) for m in later for e in m.files_of("images")]
        if not entries:
            return None
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rekbatch-state-")))
        images = []
        for i, (run_id, entry) in enumerate(entries):
            cancel.check()
            images.append(_fetch(store, run_id, entry, work / f"{i}.parquet"))
        out = work / "snapshot.parquet"
        covers = sorted(covered | {covered_id(m) for m in later})
        _merge(base, images, out, covers, work, cancel=cancel)
        cancel.check()
        path = snapshot_path(len(covers), manifests[-1].run_id)
        store.destination.publish_file(path, out, store.s3_client)
        logger.info("state: wrote %s (%d runs)", path, len(covers))
        return path


def _fetch(store: RunStore, run_id: str, entry: FileEntry, local: Path) -> str:
    """A local file of a committed `images` file: itself, or a copy streamed from S3."""
    destination = store.destination
    if not destination.is_s3:
        if not (Path(destination.root) / entry.path).is_file():
            raise missing_file(store, run_id, entry)
        return str(Path(destination.root) / entry.path)
    with local.open("wb") as out:
        destination.download(entry.path, out, store.s3_client)
    return str(local)


def _merge(
    base: Snapshot | None, images: list[str], out: Path, covers: list[str], work: Path, *, cancel: Cancel
) -> None:
    """DuckDB's merge of `base` and the `images` files into `out`, spilling under `work`; `cancel`
    interrupts it."""
    import duckdb  # only on the commit path: planning reads the snapshot with pyarrow

    empty = "(SELECT ''::VARCHAR AS key, ''::VARCHAR AS etag, ''::VARCHAR AS settled WHERE false)"
    with duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{MERGE_MEMORY}'")
        con.execute(f"SET temp_directory = '{_quoted(str(work / 'spill'))}'")
        con.execute("SET preserve_insertion_order = false")
        sql = _MERGE.format(
            images="[" + ", ".join(f"'{_quoted(p)}'" for p in images) + "]",
            base=f"read_parquet('{_quoted(base.local)}')" if base is not None else empty,
            out=_quoted(str(out)),
            rows=ROW_GROUP_ROWS,
            covers=_quoted(json.dumps(covers)),
        )
        with cancel.merging(con):
            con.execute(sql)


def _quoted(text: str) -> str:
    return text.replace("'", "''")
