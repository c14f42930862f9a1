"""The attempt and the commit: claim an attempt number (`batch.run.resume` keeps what a resumed run's
earlier attempts did), and commit once: the ledger checked, the `runs` row written, the manifest created
create-only. Another attempt having created it first is a lost race. See docs/design/commit-protocol.md.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
from batch.core.tables import CALL_SECONDS_SCHEMA, RUNS_SCHEMA
from batch.core.timeline import timeline_rows
from batch.run import faults
from batch.run.plan import settings_digests
from batch.run.summary import RunSummary
from batch.storage.commits import RunStore
from batch.storage.sink import write_tables
from batch.storage.snapshot import update_snapshot

__all__ = ["Attempt", "commit", "runs_row", "start_attempt", "write_snapshot"]

logger = logging.getLogger(__name__)


@dataclass
class Attempt:
    """This process's attempt on the run: its record, the ledger and the files it will commit."""

    record: AttemptRecord
    ledger: Ledger = field(default_factory=Ledger)
    files: list[FileEntry] = field(default_factory=list)
    #: Attempts whose batches are committed with this one (itself, and earlier ones on resume).
    attempts: set[int] = field(default_factory=set)
    #: Keys of the images of earlier attempts it keeps (on resume): the listing skips them.
    kept_keys: frozenset[str] = frozenset()
    #: The number of this attempt's next batch.
    next_batch: int = 0
    #: On resume, key -> (ETag, attempt) of the image's unfinished record whose answers its new try takes.
    resumable: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, record: BatchRecord) -> None:
        for image in record.images:
            self.ledger.record(image)
        self.files.extend(record.files)
        self.attempts.add(record.attempt)


def start_attempt(config: RunConfig, store: RunStore, summary: RunSummary) -> Attempt:
    """Claim this process's attempt number; on `--resume`, check that it continues the same run (same
    input, same config) and keep the run's date partition."""
    previous = store.attempts(summary.run_id)
    started_at, dt = summary.started_at, summary.started_at.strftime("%Y-%m-%d")
    if config.resume:
        if not previous:
            raise ConfigError(f"run.resume: no attempt of run {config.resume} under {config.output}")
        first = previous[0]
        if (first.input, first.config_digest) != (config.input, summary.config_digest):
            raise ConfigError(
                f"run.resume: run {config.resume} ran over {first.input} with config {first.config_digest}; "
                f"this is {config.input} with config {summary.config_digest}"
            )
        started_at, dt = first.started_at, first.dt  # the run keeps its date partition
    record = store.claim_attempt(
        AttemptRecord(summary.run_id, len(previous) + 1, started_at, dt, config.input, summary.config_digest)
    )
    summary.attempt = record.attempt
    return Attempt(record, attempts={record.attempt})


def commit(config: RunConfig, store: RunStore, summary: RunSummary, attempt: Attempt) -> None:
    """Check the accounting, write the `runs` row, create the manifest: the run's one commit point."""
    problems = attempt.ledger.problems()
    if problems:
        summary.end("aborted", "accounting check failed: " + "; ".join(problems))
        return
    summary.end("completed")  # what the runs row says; readers only ever see it if the commit wins
    summary.ended_at = datetime.now(UTC)
    try:
        won = _write_commit(config, store, summary, attempt)
    except RunAborted as exc:
        summary.end("aborted", str(exc))
        return
    except OutputUnwritable as exc:
        summary.end("unwritable", str(exc))
        return
    except (OSError, ClientError, BotoCoreError) as exc:
        summary.end("aborted", f"commit failed: {exc}")
        return
    if not won:
        summary.end("lost-race")
        return
    summary.manifest = store.destination.location(manifest_path(summary.run_id))
    logger.debug("committed %s: %d files", summary.manifest, len(attempt.files))
    write_snapshot(store)


def write_snapshot(store: RunStore) -> None:
    """After a commit: the settled state's snapshot, to cover it (`batch.storage.snapshot`). A cache:
    one that fails leaves the run committed and the next start reading the runs since the last one."""
    try:
        update_snapshot(store, store.manifests())
    except Exception as exc:
        logger.debug("snapshot failed", exc_info=True)
        print(f"rekbatch: warning: state snapshot not written: {one_line(str(exc), 300)}", file=sys.stderr)


def _write_commit(config: RunConfig, store: RunStore, summary: RunSummary, attempt: Attempt) -> bool:
    """Write the `runs` row, then create the manifest; False if another attempt created it first."""
    run_files = _write_runs_row(config, summary, attempt.record, store)
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
        counts=attempt.ledger.counts,
    )
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
    """The run's own tables: its `runs` row and its `call_seconds` timeline, listed in the manifest."""
    timeline = timeline_rows(
        summary.call_seconds,
        started_at=summary.started_at,
        quotas=summary.quotas,
        common={"run_id": summary.run_id, "bucket": config.bucket, "key": config.prefix, "etag": None},
    )
    written = write_tables(
        store.destination,
        {"call_seconds": timeline, "runs": [runs_row(config, summary)]},
        {"call_seconds": CALL_SECONDS_SCHEMA, "runs": RUNS_SCHEMA},
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
        "full": summary.full,
        "region": summary.region or None,
        "quotas": summary.quota_list(),
    }
