"""The attempt and the commit: claim an attempt number (`batch.run.resume` keeps what a resumed run's
earlier attempts did), and commit: the ledger checked, the `runs` row written, the manifest created
create-only. Another attempt having created it first is a lost race. A long run (`run.commit_every`)
commits segments on the way through the same `commit` (`batch.core.segments`), then its final manifest;
a segment's state snapshot is written in the background (`SegmentSnapshots`), the run's last one after
its commit (`write_snapshot`). See docs/design/commit-protocol.md and docs/design/state.md.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.registry import all_tables
from batch.config.model import RunConfig
from batch.core.errors import ConfigError, OutputUnwritable, RunAborted
from batch.core.manifest import (
    OUTCOMES,
    AttemptRecord,
    BatchRecord,
    FileEntry,
    Ledger,
    Manifest,
    manifest_path,
    runs_file_name,
)
from batch.core.redaction import one_line
from batch.core.segments import batch_counts, final_counts
from batch.core.tables import CALL_SECONDS_SCHEMA, RUNS_SCHEMA
from batch.core.timeline import timeline_rows
from batch.run import faults
from batch.run.plan import settings_digests
from batch.run.summary import RunSummary
from batch.storage.commits import RunStore
from batch.storage.sink import write_tables
from batch.storage.snapshot import Cancel, update_snapshot

__all__ = [
    "Attempt",
    "SegmentSnapshots",
    "check_resume",
    "commit",
    "runs_row",
    "start_attempt",
    "write_snapshot",
]

logger = logging.getLogger(__name__)


@dataclass
class Attempt:
    """This process's attempt on the run: its record, the ledger and the files it will commit."""

    record: AttemptRecord
    ledger: Ledger = field(default_factory=Ledger)
    #: The (attempt, batch) of the batches its next commit lists (not those a segment committed), their
    #: files, and the counts of their images' outcomes (`listed`: the images).
    batches: list[tuple[int, int]] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    pending: Counter[str] = field(default_factory=Counter)
    #: Attempts whose batches are committed with this one (itself, and earlier ones on resume).
    attempts: set[int] = field(default_factory=set)
    #: The run's segments committed so far (by this attempt or earlier ones), and their counts summed.
    segments: int = 0
    segment_counts: Counter[str] = field(default_factory=Counter)
    #: When the last segment was committed (or the attempt started): `time.monotonic()`.
    segment_clock: float = field(default_factory=time.monotonic)
    #: Keys of the images of earlier attempts it keeps (on resume): the listing skips them.
    kept_keys: frozenset[str] = frozenset()
    #: The number of this attempt's next batch.
    next_batch: int = 0
    #: On resume, key -> (ETag, attempt) of the image's unfinished record whose answers its new try takes.
    resumable: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, record: BatchRecord, *, committed: bool = False) -> None:
        """Account a complete batch; unless a segment of the run committed it already (on resume), the
        next commit lists it."""
        for image in record.images:
            self.ledger.record(image)
        if not committed:
            self.batches.append((record.attempt, record.batch))
            self.files.extend(record.files)
            self.attempts.add(record.attempt)
            self.pending.update(batch_counts([record]))

    def segment_committed(self, counts: Counter[str]) -> None:
        """A segment listing the pending batches is committed: the next one starts empty."""
        self.segments += 1
        self.segment_counts.update(counts)
        self.batches, self.files, self.pending = [], [], Counter()
        self.attempts = {self.record.attempt}
        self.segment_clock = time.monotonic()


def check_resume(config: RunConfig, store: RunStore, options_digest: str) -> list[AttemptRecord]:
    """On `--resume`, before the analyses' driver hooks call anything (a users' sync bills IndexFaces):
    the run has an attempt, over the same input with the same config (`options_digest`: the config
    digest without what the hooks resolve). Its attempts, oldest first."""
    previous = store.attempts(config.resume)
    if not previous:
        segments = store.run_manifests(config.resume)
        gone = f" ({len(segments)} segments committed, its control files gone)" if segments else ""
        raise ConfigError(f"run.resume: no attempt of run {config.resume} under {config.output}{gone}")
    first = previous[0]
    options = first.options_digest or options_digest  # a record without it is checked once resolved
    if (first.input, options) != (config.input, options_digest):
        raise ConfigError(
            f"run.resume: run {config.resume} ran over {first.input} with config "
            f"{first.options_digest or first.config_digest}; this is "
            f"{config.input} with config {options_digest}: resume with the same input and config, or "
            "start a new run (without --resume)"
        )
    return previous


def start_attempt(
    config: RunConfig, store: RunStore, summary: RunSummary, options_digest: str | None = None
) -> Attempt:
    """Claim this process's attempt number; on `--resume`, check that it continues the same run (same
    input, same config: `check_resume`) and keep the run's date partition. `options_digest` is the
    config digest before the driver hooks resolved anything (default: `summary.config_digest`).

    A resume goes on when only what the hooks resolved changed since the first attempt (the users
    under `--users`, the photos of `--reference`): the images its kept batches hold keep their results and
    the settings digests they were settled under, so the next run analyses them again."""
    options = summary.config_digest if options_digest is None else options_digest
    previous = store.attempts(summary.run_id)
    started_at, dt = summary.started_at, summary.started_at.strftime("%Y-%m-%d")
    if config.resume:
        first = check_resume(config, store, options)[0]
        if first.config_digest != summary.config_digest:
            if not first.options_digest:  # written before the options digest: cannot tell what changed
                raise ConfigError(
                    f"run.resume: run {config.resume} ran with config {first.config_digest}; this is "
                    f"{summary.config_digest} (the config, or the reference photos or users it resolves, "
                    "changed): start a new run (without --resume)"
                )
            print(
                f"rekbatch: warning: run {config.resume}: the reference photos (under --users, "
                "--reference) changed since its first attempt: the images of its kept batches keep "
                "their results, and the next run analyses them again",
                file=sys.stderr,
            )
        started_at, dt = first.started_at, first.dt  # the run keeps its date partition
    elif store.run_manifests(summary.run_id):  # another attempt would commit them again, in their files
        run_id = summary.run_id
        raise ConfigError(f"run.run_id: run {run_id} has committed segments; finish it: --resume {run_id}")
    record = store.claim_attempt(
        AttemptRecord(
            summary.run_id, len(previous) + 1, started_at, dt, config.input, summary.config_digest, options
        )
    )
    summary.attempt = record.attempt
    return Attempt(record, attempts={record.attempt})


def commit(
    config: RunConfig, store: RunStore, summary: RunSummary, attempt: Attempt, *, final: bool = True
) -> bool:
    """Check the accounting, write the `runs` row, create the manifest: the run's commit point. With
    `final` False, a segment of a run still going: the batches done since the last one, no `runs` row,
    the accounting checked but for the images still to come. Returns whether this attempt committed
    (the caller then writes the snapshot, `write_snapshot`)."""
    if final:
        counts, problems = final_counts(attempt.ledger.counts, attempt.segment_counts)
    else:  # the run's segments with this one must not count more than the run has so far
        counts = attempt.pending
        problems = final_counts(attempt.ledger.counts, attempt.segment_counts + counts)[1]
    problems = attempt.ledger.problems(final=final) + problems
    if problems:
        summary.end("aborted", "accounting check failed: " + "; ".join(problems))
        return False
    if final:
        summary.segments = attempt.segments + 1
        summary.end("completed")  # what the runs row says; readers only ever see it if the commit wins
        summary.ended_at = datetime.now(UTC)
    reason: str | None
    try:
        won = _write_commit(config, store, summary, attempt, Counter(counts), final=final)
    except RunAborted as exc:
        won, status, reason = False, "aborted", str(exc)
    except OutputUnwritable as exc:
        won, status, reason = False, "unwritable", str(exc)
    except (OSError, ClientError, BotoCoreError) as exc:
        won, status, reason = False, "aborted", f"commit failed: {exc}"
    else:
        status, reason = "lost-race", None
    if not won:
        summary.segments = attempt.segments  # the final manifest counted itself, and is not there
        summary.end(status, reason)
        return False
    segment = attempt.segments + 1
    path = manifest_path(summary.run_id, 0 if final else segment)
    logger.debug("committed %s: %d files", store.destination.location(path), len(attempt.files))
    if final:
        summary.manifest = store.destination.location(path)
    else:
        attempt.segment_committed(Counter(counts))
        summary.segments = attempt.segments
    return True


def write_snapshot(
    store: RunStore, *, after: SegmentSnapshots | None = None, cancel: Cancel | None = None
) -> None:
    """After a commit: the settled state's snapshot, to cover it (`batch.storage.snapshot`), once the
    segment's snapshot being written `after` is done. A cache: one that fails, or that a signal stops,
    leaves the run committed and the next start reading the runs since the last one (a warning); one
    that `cancel` stops (the run ended) says nothing more."""
    try:
        if after is not None:
            after.wait()
        faults.snapshot_pause(cancel.event if cancel else None)
        update_snapshot(store, store.manifests(), cancel)
    except KeyboardInterrupt:
        _snapshot_warning("stopped by a signal")
        raise
    except Exception as exc:
        if cancel is not None and cancel.requested:  # the run ended: it says so itself
            logger.info("state: the segment's snapshot stopped with the run")
            return
        logger.debug("snapshot failed", exc_info=True)
        _snapshot_warning(one_line(str(exc), 300))


class SegmentSnapshots:
    """A segment's snapshot, written in one background thread while the run goes on submitting and
    collecting batches (at 10M keys it takes minutes). One at a time: a segment committed while the
    previous one's is being written gets none, the next snapshot covers it. Leaving the block stops the
    one still being written (a run that ends otherwise than by its last commit's snapshot) and waits
    for it at most `STOP_SECONDS`: the thread is a daemon, nothing hangs on it."""

    STOP_SECONDS = 10.0

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._cancel = Cancel()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """After a segment's commit: its snapshot, unless the previous one is still being written."""
        if self._thread is not None and self._thread.is_alive():
            logger.info(
                "state: the previous segment's snapshot is still being written: the next covers this one"
            )
            return
        self._thread = threading.Thread(
            target=write_snapshot,
            args=(self._store,),
            kwargs={"cancel": self._cancel},
            name="rekbatch-segment-snapshot",
            daemon=True,
        )
        self._thread.start()

    def wait(self) -> None:
        """Until the snapshot being written is done (a signal stops the wait: KeyboardInterrupt)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.2)

    def __enter__(self) -> SegmentSnapshots:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._cancel()
            self._thread.join(self.STOP_SECONDS)


def _snapshot_warning(reason: str) -> None:
    print(f"rekbatch: warning: state snapshot not written: {reason}", file=sys.stderr)


def _write_commit(
    config: RunConfig,
    store: RunStore,
    summary: RunSummary,
    attempt: Attempt,
    counts: Counter[str],
    *,
    final: bool,
) -> bool:
    """Write the `runs` row (of a final commit), then create the manifest; False if another attempt
    created it first."""
    run_files = _write_runs_row(config, summary, attempt.record, store) if final else ()
    manifest = Manifest(
        run_id=summary.run_id,
        attempt=attempt.record.attempt,
        attempts=tuple(sorted(attempt.attempts)),
        started_at=attempt.record.started_at,
        committed_at=datetime.now(UTC),
        dt=attempt.record.dt,
        input=config.input,
        config_digest=summary.config_digest,
        analyses=settings_digests(config),
        files=(*attempt.files, *run_files),
        counts=counts,
        segment=attempt.segments + 1,
        final=final,
        batches=tuple(attempt.batches),
    )
    if final:
        faults.exit_before_commit()
        faults.commit_barrier()
    missing = store.missing(manifest.files)
    if missing:  # e.g. deleted while the run ran: a manifest must list only files a reader can open
        raise RunAborted(
            f"{len(missing)} of its {len(manifest.files)} files are missing or changed "
            f"(first: {store.destination.location(missing[0].path)}); --resume {summary.run_id} "
            "writes them again"
        )
    return store.commit(manifest)


def _write_runs_row(
    config: RunConfig, summary: RunSummary, record: AttemptRecord, store: RunStore
) -> tuple[FileEntry, ...]:
    """The run's own tables: its `runs` row, its `call_seconds` timeline and the analyses' driver rows
    (`DriverReport.tables`), listed in the manifest."""
    timeline = timeline_rows(
        summary.call_seconds,
        started_at=summary.started_at,
        quotas=summary.quotas,
        common={"run_id": summary.run_id, "bucket": config.bucket, "key": config.prefix, "etag": None},
    )
    run_id = summary.run_id
    driver = {
        table: [{**row, "run_id": run_id} for row in rows] for table, rows in summary.driver_tables.items()
    }
    schemas = all_tables()
    written = write_tables(
        store.destination,
        {"call_seconds": timeline, "runs": [runs_row(config, summary)], **driver},
        {"call_seconds": CALL_SECONDS_SCHEMA, "runs": RUNS_SCHEMA, **{t: schemas[t] for t in driver}},
        dt=record.dt,
        name=runs_file_name(summary.run_id, record.attempt),
        compression=config.output_options.compression,
        s3_client=store.s3_client,
    )
    summary.add_files(written, count_rows=False)
    return tuple(written)


def runs_row(config: RunConfig, summary: RunSummary) -> dict[str, Any]:
    """The run's row of the `runs` table."""
    return {
        "run_id": summary.run_id,
        "bucket": config.bucket,
        "key": config.prefix,
        "etag": None,
        "started_at": summary.started_at,
        "ended_at": summary.ended_at,
        "input": summary.input,
        "output": summary.output,
        "analyses": list(summary.analyses),
        "config_digest": summary.config_digest,
        "command_line": summary.command_line,
        **{f"images_{status}": summary.images.get(status, 0) for status in ("listed", *OUTCOMES)},
        "calls": summary.call_counts(),
        "retries": summary.retries,
        "throttled": summary.throttled,
        "estimated_cost_usd": summary.estimated_cost_usd,
        "repeated_calls": summary.call_counts(summary.repeated_calls),
        "repeated_cost_usd": summary.repeated_cost_usd,
        "storage_cost_usd": summary.storage_cost_usd,
        "status": summary.status,
        "error_rate": summary.error_rate,
        "exit_code": summary.exit_code,
        "attempt": summary.attempt,
        "resumed": summary.resumed,
        "kept_batches": summary.kept_batches,
        "kept_images": summary.kept_images,
        "segments": summary.segments,
        "full": summary.full,
        "region": summary.region or None,
        "quotas": summary.quota_list(),
    }
