"""A run's control files under the output root: attempts, image and batch records, manifests
(`batch.core.manifest`, `batch.core.image_record`).

`RunStore` is the view of them: claim an attempt number at start, keep each image's and each batch's
record as the attempt goes, read what a crashed attempt left for `--resume`, read the committed
manifests (the incremental state, the read path, gc), find the files of a manifest that are missing,
and commit. Every write of a control file that decides something is create-only (`Destination.create`).
`Heartbeat` keeps a running attempt's heartbeat file fresh, so gc leaves its run alone. See
docs/design/commit-protocol.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.core.errors import OutputUnreadable
from batch.core.image_record import ImageRecord
from batch.core.manifest import (
    COMMITS_DIR,
    HEARTBEAT_SECONDS,
    RUNS_DIR,
    AttemptRecord,
    BatchRecord,
    FileEntry,
    Manifest,
    attempt_path,
    batch_record_path,
    heartbeat_path,
    image_record_path,
    indexing_record_path,
    manifest_path,
    to_line,
)
from batch.core.redaction import one_line
from batch.storage.sink import Destination

logger = logging.getLogger(__name__)

#: Files read at once from S3 (manifests, records): listing and GETs are a round trip each.
READ_THREADS = 16


class RunStore:
    """The control files of every run under one output root."""

    def __init__(self, destination: Destination, s3_client: Any = None) -> None:
        self.destination = destination
        self.s3_client = s3_client

    def manifest(self, run_id: str) -> Manifest | None:
        """The run's manifest if it is committed, else None."""
        body = self.destination.read(manifest_path(run_id), self.s3_client)
        return Manifest.from_json(body.decode()) if body is not None else None

    def manifests(self) -> list[Manifest]:
        """Every committed manifest (the segments of runs still going included), oldest commit first."""
        return self._manifests(lambda path: True)

    def run_manifests(self, run_id: str) -> list[Manifest]:
        """The committed manifests of one run (its segments, `batch.core.segments`, and its final one)."""
        segments = manifest_path(run_id, 1).rsplit("@", 1)[0] + "@"
        found = self._manifests(lambda path: path.startswith(segments) or path == manifest_path(run_id))
        return sorted(found, key=lambda m: (m.final, m.segment))

    def commit(self, manifest: Manifest) -> bool:
        """Create the manifest (a run's final one, or a segment); False if another attempt of the run
        created it first."""
        return self.destination.create(manifest.path, manifest.to_json().encode(), self.s3_client)

    def _manifests(self, wanted: Callable[[str], bool]) -> list[Manifest]:
        paths = [
            f.path
            for f in self.destination.list(f"{COMMITS_DIR}/", self.s3_client)
            if f.path.endswith(".json") and wanted(f.path)
        ]
        found = [Manifest.from_json(body.decode()) for body in self._read_all(paths) if body is not None]
        return sorted(found, key=lambda m: (m.committed_at, m.run_id))

    def claim_attempt(self, record: AttemptRecord) -> AttemptRecord:
        """Record a new attempt on the run, numbered from `record.attempt` up to the first free number."""
        while not self.destination.create(
            attempt_path(record.run_id, record.attempt), record.to_json().encode(), self.s3_client
        ):
            record = dataclasses.replace(record, attempt=record.attempt + 1)
        return record

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """The run's attempts so far, in order."""
        bodies = self._read_all(self._records(run_id, "attempt-"))
        return sorted((AttemptRecord.from_json(b.decode()) for b in bodies if b), key=lambda a: a.attempt)

    def control_files(self, run_id: str) -> list[str]:
        """The paths of the run's control files: one listing of `_runs/<run_id>/`."""
        return [f.path for f in self.destination.list(f"{RUNS_DIR}/{run_id}/", self.s3_client)]

    def run_ids(self) -> list[str]:
        """The runs with a folder of control files (`_runs/<run_id>/`): one listing of `_runs/`'s
        folders, whatever they hold (gc empties those of runs committed before its grace period)."""
        return list(self.destination.folders(f"{RUNS_DIR}/", self.s3_client))

    def committed_run_ids(self) -> set[str]:
        """The runs with a final manifest: one listing of `_commits/`, no manifest read."""
        names = (f.path.rsplit("/", 1)[-1] for f in self.destination.list(f"{COMMITS_DIR}/", self.s3_client))
        return {name.removesuffix(".json") for name in names if name.endswith(".json") and "@" not in name}

    def newest_heartbeat(self, run_id: str) -> tuple[datetime, dict[str, Any]] | None:
        """When the run's newest heartbeat file was written (the storage's clock) and what it says
        (`Heartbeat.beat`; {} if unreadable), or None without one: a listing of its heartbeat files."""
        beats = list(self.destination.list(f"{RUNS_DIR}/{run_id}/heartbeat-", self.s3_client))
        if not beats:
            return None
        newest = max(beats, key=lambda f: f.modified)
        body = self.destination.read(newest.path, self.s3_client)
        try:
            said = json.loads(body) if body else {}
        except ValueError:
            said = {}
        return newest.modified, said if isinstance(said, dict) else {}

    def first_attempt(self, run_id: str) -> AttemptRecord | None:
        """The run's first attempt's record (its input), if it is there."""
        body = self.destination.read(attempt_path(run_id, 1), self.s3_client)
        return AttemptRecord.from_json(body.decode()) if body is not None else None

    def holds_work(self, run_id: str) -> bool:
        """Whether the run has a batch or an image record (analysed images its `--resume` keeps): at
        most two listings of one page each, whatever the run's size."""
        kinds = (f"{RUNS_DIR}/{run_id}/batch-", f"{RUNS_DIR}/{run_id}/image-")  # `batch_record_path`, ...
        return any(next(iter(self.destination.list(kind, self.s3_client)), None) for kind in kinds)

    def batches(self, run_id: str, listed: Sequence[str] | None = None) -> list[BatchRecord]:
        """The records of every complete batch of the run's attempts (among `listed`, the run's
        `control_files`, when given: a listing is a request per 1,000 files, image records included)."""
        bodies = self._read_all(self._records(run_id, "batch-", listed))
        return [BatchRecord.from_json(b.decode()) for b in bodies if b]

    def batch(self, run_id: str, attempt: int, batch: int) -> BatchRecord | None:
        """One batch's record, if the batch is complete."""
        body = self._read_record(batch_record_path(run_id, attempt, batch))
        return BatchRecord.from_json(body.decode()) if body is not None else None

    def write_batch(self, run_id: str, record: BatchRecord) -> None:
        """Mark a batch complete (after its data files are written). A re-run task rewrites it."""
        path = batch_record_path(run_id, record.attempt, record.batch)
        self.destination.publish(path, record.to_json().encode(), self.s3_client)

    def write_indexing(self, run_id: str, attempt: int, key: str, etag: str, body: bytes) -> None:
        """Record an image a `collection migrate` attempt is about to send to IndexFaces
        (`batch.faces.migration.IndexingRecord`): a rerun after a kill then knows which faces in TARGET
        are the migration's, and what the killed attempt's calls cost."""
        path = indexing_record_path(run_id, attempt, key, etag)
        self.destination.publish(path, body, self.s3_client)

    def indexing(
        self, run_id: str, listed: Sequence[str] | None = None, *, besides: Collection[str] = ()
    ) -> list[bytes]:
        """The bodies of the run's `write_indexing` records (among `listed`, as for `batches`), but those
        at the paths in `besides` (not read)."""
        paths = [path for path in self._records(run_id, "indexing-", listed) if path not in besides]
        return [body for body in self._read_all(paths) if body is not None]

    def missing(self, entries: Iterable[FileEntry]) -> list[FileEntry]:
        """The entries whose file is not under the output root with the size they list (deleted, or
        rewritten since). Lists their folders, side by side: one request per 1,000 files on S3, where a
        HEAD per file would be one each."""
        entries = list(entries)
        folders = sorted({entry.path.rsplit("/", 1)[0] + "/" for entry in entries})
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            listed = pool.map(lambda folder: list(self.destination.list(folder, self.s3_client)), folders)
            sizes = {f.path: f.size_bytes for files in listed for f in files}
        return [entry for entry in entries if sizes.get(entry.path) != entry.size_bytes]

    def image(self, run_id: str, attempt: int, key: str, etag: str) -> ImageRecord | None:
        """An image's record in an attempt, if a try of it wrote one."""
        body = self._read_record(image_record_path(run_id, attempt, key, etag))
        return ImageRecord.from_bytes(body) if body is not None else None

    def write_image(self, run_id: str, record: ImageRecord) -> None:
        """Write (or rewrite) an image's record, in one step."""
        path = image_record_path(run_id, record.attempt, record.key, record.etag)
        self.destination.publish(path, record.to_bytes(), self.s3_client)

    def images(
        self, run_id: str, listed: Sequence[str] | None = None, *, besides: Collection[str] = ()
    ) -> list[ImageRecord]:
        """The image records of the run's attempts (among `listed`, as for `batches`), but those at the
        paths in `besides` (not read)."""
        paths = [path for path in self._records(run_id, "image-", listed) if path not in besides]
        return [ImageRecord.from_bytes(body) for body in self._read_all(paths) if body is not None]

    def read(self, relative: str) -> bytes | None:
        """Any file under the output root (e.g. a committed data file), or None if it is missing."""
        return self.destination.read(relative, self.s3_client)

    def _read_record(self, relative: str) -> bytes | None:
        """A record a task looks up before its work: an output that cannot answer (S3 down, the bucket
        gone, access denied) stops the run as a refused write does (`OutputUnreadable`, one line)."""
        try:
            return self.destination.read(relative, self.s3_client)
        except ClientError as exc:
            reason = exc.response.get("Error", {}).get("Code", "error")
        except BotoCoreError as exc:
            reason = one_line(str(exc))
        raise OutputUnreadable(f"cannot read {self.destination.location(relative)}: {reason}") from None

    def _records(self, run_id: str, kind: str, listed: Sequence[str] | None = None) -> list[str]:
        paths = self.control_files(run_id) if listed is None else listed
        return [path for path in paths if path.rsplit("/", 1)[-1].startswith(kind)]

    def _read_all(self, paths: list[str]) -> list[bytes | None]:
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            return list(pool.map(lambda p: self.destination.read(p, self.s3_client), paths))


class Heartbeat:
    """`with Heartbeat(store, run_id, attempt):` the attempt's heartbeat file (`heartbeat_path`), written
    on entry and then every `interval` seconds by a daemon thread until the block ends, with the
    attempt's images done and not committed (`uncommitted`, called in that thread), which a run started
    beside it names (`batch.run.others`). gc leaves every file of a run whose control files changed
    lately (`batch.storage.gc`). A first beat that fails raises (the output cannot be written); a later
    one is logged, and the next is tried."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        attempt: int,
        interval: float = HEARTBEAT_SECONDS,
        *,
        uncommitted: Callable[[], int] = lambda: 0,
    ) -> None:
        self._store, self._run_id, self._attempt, self._interval = store, run_id, attempt, interval
        self._uncommitted = uncommitted
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_until_stopped, name="rekbatch-heartbeat", daemon=True
        )
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopped.set()
        self._thread.join()

    def beat(self) -> None:
        """Write the heartbeat file once (who runs the attempt, and when it last beat)."""
        body = to_line(
            {
                "run_id": self._run_id,
                "attempt": self._attempt,
                "beat": self.beats + 1,
                "at": datetime.now(UTC).isoformat(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                # images of complete batches not committed yet: another run's start names them
                "uncommitted": self._uncommitted(),
            }
        )
        path = heartbeat_path(self._run_id, self._attempt)
        self._store.destination.publish(path, body.encode(), self._store.s3_client)
        self.beats += 1

    def _beat_until_stopped(self) -> None:
        failures = 0
        while not self._stopped.wait(self._interval):
            try:
                self.beat()
            except Exception as exc:  # the run's own writes report an output that is gone
                failures += 1
                log = logger.warning if failures == 1 else logger.debug
                log("heartbeat of run %s attempt %d not written: %s", self._run_id, self._attempt, exc)
