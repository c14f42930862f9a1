"""A run's commit record and the accounting that must hold before it is written. Pure: no I/O.

A run becomes visible in one step, when its manifest is created (create-only: of two attempts racing
to commit one run id exactly one wins); readers open exactly the files manifests list.

    DEST/<table>/dt=YYYY-MM-DD/<run_id>-a<attempt>-<batch:06d>.parquet   data, written whole, immutable
    DEST/_runs/<run_id>/attempt-<attempt>.json                           one per process start, create-only
    DEST/_runs/<run_id>/batch-<attempt>-<batch:06d>.json                 a batch's record, after its files
    DEST/_runs/<run_id>/image-<attempt>-<digest>.json.gz                 an image's record, as it goes
    DEST/_runs/<run_id>/heartbeat-<attempt>.json                         rewritten while the attempt runs
    DEST/_commits/<run_id>.json                                          the manifest: the commit point
    DEST/_commits/<run_id>@<segment:06d>.json                            a long run's earlier segments

The `Ledger` checks that every listed (key, etag) ends in exactly one outcome and no (key, etag,
analysis) is settled twice in one run; it holds 16-byte digests, not keys. The protocol, its reasons
and its figures: docs/design/commit-protocol.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

#: What becomes of each listed image in a run, exactly one each. `changed`: the object changed while
#: the run read it, so its results are dropped and nothing is settled (the next run analyses the new
#: version). `unchanged`: a committed run already has every requested analysis of it with the same
#: ETag and settings, so it is not sent anywhere.
OUTCOMES: tuple[str, ...] = ("analysed", "rejected", "failed", "skipped", "changed", "unchanged")
COMMITS_DIR = "_commits"
RUNS_DIR = "_runs"
MANIFEST_FORMAT = 1
#: A running attempt rewrites its heartbeat file this often (a driver thread: `batch.storage.commits`).
HEARTBEAT_SECONDS = 30.0
#: gc leaves every file of a run that changed a control file (heartbeat, attempt or batch record) more
#: recently than this: four heartbeats, so a slow write or a paused driver is not taken for a dead one.
LIVE_SECONDS = 4 * HEARTBEAT_SECONDS


# --- names ---------------------------------------------------------------------------------------------


def data_file_name(run_id: str, attempt: int, batch: int) -> str:
    """The name (without `.parquet`) of a batch's file in every table: from the run, never from keys."""
    return f"{run_id}-a{attempt}-{batch:06d}"


def runs_file_name(run_id: str, attempt: int) -> str:
    """The name of the `runs` table's file of an attempt (written by the driver, just before the commit)."""
    return f"{run_id}-a{attempt}-runs"


_DATA_FILE = re.compile(r"(?P<run_id>.+)-a[0-9]+-(?:[0-9]{6,}|runs)\.parquet")


def run_of_data_file(path: str) -> str | None:
    """The run id in a data file's name, or None for a name the job does not write (a stray)."""
    match = _DATA_FILE.fullmatch(path.rsplit("/", 1)[-1])
    return match.group("run_id") if match else None


def run_of_control_file(path: str) -> str | None:
    """The run id of a file under `_runs/<run_id>/`, else None."""
    parts = path.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == RUNS_DIR else None


def manifest_path(run_id: str, segment: int = 0) -> str:
    """The run's final manifest, or (`segment` >= 1) one of the segments a long run commits before it
    (`batch.core.segments`): `@` is in no run id, so no run's name is another's segment."""
    return f"{COMMITS_DIR}/{run_id}@{segment:06d}.json" if segment else f"{COMMITS_DIR}/{run_id}.json"


def attempt_path(run_id: str, attempt: int) -> str:
    return f"{RUNS_DIR}/{run_id}/attempt-{attempt}.json"


def batch_record_path(run_id: str, attempt: int, batch: int) -> str:
    return f"{RUNS_DIR}/{run_id}/batch-{attempt}-{batch:06d}.json"


def image_record_path(run_id: str, attempt: int, key: str, etag: str) -> str:
    """Where an attempt keeps one image's record (`batch.core.image_record`): named from the image, so
    every try of it in the attempt (a task re-run, a batch split) finds it; never from the key's text."""
    return f"{RUNS_DIR}/{run_id}/image-{attempt}-{image_identity(key, etag).hex()}.json.gz"


def indexing_record_path(run_id: str, attempt: int, key: str, etag: str) -> str:
    """Where a `collection migrate` attempt records an image before each IndexFaces call of it."""
    return f"{RUNS_DIR}/{run_id}/indexing-{attempt}-{image_identity(key, etag).hex()}.json"


def heartbeat_path(run_id: str, attempt: int) -> str:
    return f"{RUNS_DIR}/{run_id}/heartbeat-{attempt}.json"


def to_line(document: Mapping[str, Any]) -> str:
    """One line of compact JSON (non-ASCII kept as is: keys are Unicode)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


# --- values --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One data file: where it is under the output root, and what a reader must find in it."""

    table: str
    path: str
    rows: int
    sha256: str
    size_bytes: int

    def as_json(self) -> dict[str, Any]:
        # No `table`/`rows` member names: both are reserved words in Athena's DDL.
        return {
            "table_name": self.table,
            "path": self.path,
            "row_count": self.rows,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FileEntry:
        return cls(d["table_name"], d["path"], d["row_count"], d["sha256"], d["size_bytes"])


class ImageOutcome(NamedTuple):
    """What became of one listed image in a run: its outcome and the analyses it settled."""

    key: str
    etag: str
    status: str
    settled: tuple[str, ...] = ()


def call_list(calls: Mapping[tuple[str, str], int]) -> list[list[Any]]:
    """(operation, outcome) -> count as JSON: [[operation, outcome, count], ...]."""
    return [[op, outcome, n] for (op, outcome), n in sorted(calls.items()) if n]


def call_counts(items: Iterable[Sequence[Any]]) -> dict[tuple[str, str], int]:
    """`call_list`'s JSON back to (operation, outcome) -> count."""
    return {(op, outcome): n for op, outcome, n in items}


@dataclass(frozen=True)
class BatchRecord:
    """A complete batch: its files, its images' outcomes and the calls it made (for the summary).

    `calls` holds every attempt its images cost in the attempt, by (operation, outcome); `repeated` the
    part of them that was thrown away (tries of an image that died, or whose task failed)."""

    attempt: int
    batch: int
    files: tuple[FileEntry, ...]
    images: tuple[ImageOutcome, ...]
    calls: Mapping[tuple[str, str], int] = field(default_factory=dict)
    retries: int = 0
    throttled: int = 0
    repeated: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def to_json(self) -> str:
        return to_line(
            {
                "attempt": self.attempt,
                "batch": self.batch,
                "files": [f.as_json() for f in self.files],
                "images": [list(image) for image in self.images],
                "calls": call_list(self.calls),
                "retries": self.retries,
                "throttled": self.throttled,
                "repeated": call_list(self.repeated),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> BatchRecord:
        d = json.loads(text)
        return cls(
            attempt=d["attempt"],
            batch=d["batch"],
            files=tuple(FileEntry.from_json(f) for f in d["files"]),
            images=tuple(ImageOutcome(k, e, s, tuple(a)) for k, e, s, a in d["images"]),
            calls=call_counts(d["calls"]),
            retries=d["retries"],
            throttled=d["throttled"],
            repeated=call_counts(d.get("repeated", ())),  # older versions wrote none
        )


@dataclass(frozen=True)
class AttemptRecord:
    """One process's start on a run id. `--resume` checks that it continues the same work.

    `started_at` and `dt` are the run's: a resumed attempt keeps the first attempt's. `config_digest` is
    the run's config with what the analyses' driver hooks resolved (users, reference photos' ETags);
    `options_digest` the config alone, which a resume must repeat ("" in records written before it)."""

    run_id: str
    attempt: int
    started_at: datetime
    dt: str
    input: str
    config_digest: str
    options_digest: str = ""

    def to_json(self) -> str:
        return to_line(
            {
                "run_id": self.run_id,
                "attempt": self.attempt,
                "started_at": self.started_at.isoformat(),
                "dt": self.dt,
                "input": self.input,
                "config_digest": self.config_digest,
                "options_digest": self.options_digest,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> AttemptRecord:
        d = json.loads(text)
        return cls(
            d["run_id"],
            d["attempt"],
            datetime.fromisoformat(d["started_at"]),
            d["dt"],
            d["input"],
            d["config_digest"],
            d.get("options_digest", ""),
        )


@dataclass(frozen=True)
class Manifest:
    """The commit record of a run: every file a reader may open, and the run's accounting."""

    run_id: str
    attempt: int
    #: Attempts whose batches it holds (more than one after `--resume`).
    attempts: tuple[int, ...]
    started_at: datetime
    committed_at: datetime
    dt: str
    input: str
    config_digest: str
    #: Settings digest per analysis of the run (`batch.analyses.settings_digest`).
    analyses: Mapping[str, str]
    files: tuple[FileEntry, ...]
    counts: Mapping[str, int]
    #: Its number among the run's manifests, from 1 (`batch.core.segments`); a run that commits once has
    #: one manifest, segment 1, final.
    segment: int = 1
    #: The run's last manifest: it holds the `runs` row, and is at `manifest_path(run_id)`.
    final: bool = True
    #: The (attempt, batch) of each batch whose files it lists (a resume keeps them as committed).
    batches: tuple[tuple[int, int], ...] = ()

    @property
    def path(self) -> str:
        """Where it is under the output root."""
        return manifest_path(self.run_id, 0 if self.final else self.segment)

    def files_of(self, table: str) -> list[FileEntry]:
        return [f for f in self.files if f.table == table]

    def to_json(self) -> str:
        return to_line(
            {
                "format": MANIFEST_FORMAT,
                "run_id": self.run_id,
                "attempt": self.attempt,
                "attempts": list(self.attempts),
                "started_at": self.started_at.isoformat(),
                "committed_at": self.committed_at.isoformat(),
                "dt": self.dt,
                "input": self.input,
                "config_digest": self.config_digest,
                "analyses": [{"analysis": a, "settings_digest": d} for a, d in self.analyses.items()],
                "files": [f.as_json() for f in self.files],
                "counts": {name: int(self.counts.get(name, 0)) for name in ("listed", *OUTCOMES)},
                "segment": self.segment,
                "final": self.final,
                "batches": [list(batch) for batch in self.batches],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {d.get('format')!r} is not {MANIFEST_FORMAT}")
        return cls(
            run_id=d["run_id"],
            attempt=d["attempt"],
            attempts=tuple(d["attempts"]),
            started_at=datetime.fromisoformat(d["started_at"]),
            committed_at=datetime.fromisoformat(d["committed_at"]),
            dt=d["dt"],
            input=d["input"],
            config_digest=d["config_digest"],
            analyses={a["analysis"]: a["settings_digest"] for a in d["analyses"]},
            files=tuple(FileEntry.from_json(f) for f in d["files"]),
            counts=dict(d["counts"]),
            segment=d.get("segment", 1),  # older versions committed each run once
            final=d.get("final", True),
            batches=tuple((a, b) for a, b in d.get("batches", ())),
        )


_FILE_STRUCT = pa.struct(
    [
        pa.field("table_name", pa.string()),
        pa.field("path", pa.string()),
        pa.field("row_count", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("size_bytes", pa.int64()),
    ]
)

#: The manifest's JSON as a table (one row per committed run): for Athena's DDL and DuckDB's read_json.
#: Times are ISO 8601 strings.
COMMITS_SCHEMA = pa.schema(
    [
        pa.field("format", pa.int32()),
        pa.field("run_id", pa.string()),
        pa.field("attempt", pa.int32()),
        pa.field("attempts", pa.list_(pa.int32())),
        pa.field("started_at", pa.string()),
        pa.field("committed_at", pa.string()),
        pa.field("dt", pa.string()),
        pa.field("input", pa.string()),
        pa.field("config_digest", pa.string()),
        pa.field(
            "analyses",
            pa.list_(
                pa.struct([pa.field("analysis", pa.string()), pa.field("settings_digest", pa.string())])
            ),
        ),
        pa.field("files", pa.list_(_FILE_STRUCT)),
        pa.field("counts", pa.struct([pa.field(n, pa.int64()) for n in ("listed", *OUTCOMES)])),
        pa.field("segment", pa.int32()),
        pa.field("final", pa.bool_()),
        pa.field("batches", pa.list_(pa.list_(pa.int32()))),
    ]
)


# --- accounting -----------------------------------------------------------------------------------------


def image_identity(key: str, etag: str) -> bytes:
    """16 bytes that stand for (key, etag): unambiguous (the key's length is hashed in) and small."""
    return hashlib.blake2b(f"{len(key)}:{key}{etag}".encode(), digest_size=16).digest()


class Ledger:
    """Every listed image's outcome in one run, checked before the run commits.

    Use: `listed(key, etag)` for each object the run takes from the listing to analyse (or from a kept
    batch on resume), `record(outcome)` for each image outcome a batch reports, `unchanged(key, etag)`
    for an image the planner lists and finds unchanged at once, `listed_again()` for a key the listing
    shows twice (in key order, next to itself), then `problems()`: empty means every listed image has
    exactly one outcome, no outcome is for an image that was not listed, and no (key, etag, analysis)
    is settled twice. `counts` holds `listed` and each outcome, as they arrive.

    Memory: the images listed and awaiting their outcome (those in flight), and an 8-byte fingerprint
    of each image sent whose outcome came (`Fingerprints`), which only tells a duplicated outcome from
    an unexpected one; unchanged images are counted, not held.
    """

    def __init__(self) -> None:
        self._pending: set[bytes] = set()
        self._done = Fingerprints()
        self._strays: set[bytes] = set()
        self.counts: Counter[str] = Counter()
        self._listed_twice = 0
        self._duplicated = 0
        self._unexpected = 0
        self._resettled = 0
        self._unknown_status = 0

    def listed(self, key: str, etag: str) -> None:
        identity = image_identity(key, etag)
        if identity in self._pending:
            self._listed_twice += 1
        self._pending.add(identity)
        self.counts["listed"] += 1

    def unchanged(self, key: str, etag: str) -> None:
        """Listed, and `unchanged` at once: it can be neither lost nor duplicated."""
        self.counts["listed"] += 1
        self.counts["unchanged"] += 1

    def listed_again(self) -> None:
        """The listing showed the previous key again: counted listed, given no outcome."""
        self._listed_twice += 1
        self.counts["listed"] += 1

    def record(self, outcome: ImageOutcome) -> None:
        identity = image_identity(outcome.key, outcome.etag)
        if identity in self._pending:
            self._pending.discard(identity)
            self._done.add(fingerprint(identity))
        elif identity in self._strays or fingerprint(identity) in self._done:
            self._duplicated += 1
        else:
            self._unexpected += 1
            self._strays.add(identity)
        if outcome.status not in OUTCOMES:
            self._unknown_status += 1
        self.counts[outcome.status] += 1
        self._resettled += len(outcome.settled) - len(set(outcome.settled))

    def problems(self, *, final: bool = True) -> list[str]:
        """Why the run must not commit; empty when the accounting is clean. Not `final` (a segment of a
        run still going, `batch.core.segments`): images listed and not yet done are no problem."""
        found = {
            "listed images without an outcome (lost)": len(self._pending) if final else 0,
            "outcomes for images not listed (unexpected)": self._unexpected,
            "images with more than one outcome (duplicated)": self._duplicated,
            "images listed twice": self._listed_twice,
            "(key, etag, analysis) settled more than once": self._resettled,
            "outcomes with an unknown status": self._unknown_status,
        }
        return [f"{n} {what}" for what, n in found.items() if n]


def fingerprint(identity: bytes) -> int:
    """8 bytes of an image's identity, as an unsigned integer."""
    return int.from_bytes(identity[:8], "little")


class Fingerprints:
    """A set of 64-bit integers in about 8 bytes each: a sorted numpy array, and a set of the latest
    added, merged into it once it holds an eighth as many (at least `MERGE_AT`, at most `MERGE_MAX`)."""

    MERGE_AT = 1 << 12
    MERGE_MAX = 1 << 20

    def __init__(self) -> None:
        self._sorted = np.empty(0, np.uint64)
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add(self, value: int) -> None:
        if value in self:
            return
        self._recent.add(value)
        if len(self._recent) >= min(max(self.MERGE_AT, len(self._sorted) >> 3), self.MERGE_MAX):
            merged = np.concatenate([self._sorted, np.fromiter(self._recent, np.uint64, len(self._recent))])
            merged.sort()
            self._sorted, self._recent = merged, set()

    def __contains__(self, value: int) -> bool:
        if value in self._recent:
            return True
        at = int(np.searchsorted(self._sorted, np.uint64(value)))
        return at < len(self._sorted) and int(self._sorted[at]) == value


def error_rate(counts: Mapping[str, int]) -> float:
    """Rejected and failed images over the images sent for analysis (unchanged, skipped and changed
    excluded: a changed image is no fault of the image or the service)."""
    bad = counts.get("rejected", 0) + counts.get("failed", 0)
    sent = bad + counts.get("analysed", 0)
    return bad / sent if sent else 0.0


def keep_complete_batches(
    records: Iterable[BatchRecord],
    missing: AbstractSet[str] = frozenset(),
    committed: AbstractSet[tuple[int, int]] = frozenset(),
) -> list[BatchRecord]:
    """The batch records a resumed run keeps: first every batch a committed segment of the run lists
    (`committed`, its (attempt, batch): readers see it already), then in (attempt, batch) order each
    other unless one of its files is `missing` (paths under the output root: its images are analysed
    again) or it shares an image key with one kept before it (a batch split after its record was
    written: keep one copy)."""
    kept: list[BatchRecord] = []
    keys: set[str] = set()
    ordered = sorted(records, key=lambda r: ((r.attempt, r.batch) not in committed, r.attempt, r.batch))
    for record in ordered:
        its_keys = {image.key for image in record.images}
        dropped = its_keys & keys or any(f.path in missing for f in record.files)
        if dropped and (record.attempt, record.batch) not in committed:
            continue
        kept.append(record)
        keys |= its_keys
    return kept
