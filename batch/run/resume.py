"""`--resume`: what a new attempt keeps of its run's earlier attempts, so that a crash costs no more than
the calls it had in flight.

It keeps every complete batch (its record); folds the images that a batch cut short had done (their
records, `batch.core.image_record`) into batches of its own attempt, written as any batch is, so the
manifest lists ordinary table files; and bills the calls of the images left unfinished, whose new tries
take the answers their records hold (`Attempt.resumable`). The listing then plans only the images none
of these holds. See docs/design/commit-protocol.md.
"""

from __future__ import annotations

import logging
from collections import Counter

from batch.analyses.registry import resumable_operations
from batch.config.model import RunConfig
from batch.core.errors import RunAborted
from batch.core.image_record import sort_leftovers
from batch.core.manifest import BatchRecord, batch_record_path, image_record_path, keep_complete_batches
from batch.run.batch_task import finish_batch
from batch.run.commit import Attempt
from batch.run.plan import operation_prices, run_context
from batch.run.summary import RunSummary
from batch.storage.commits import RunStore

__all__ = ["keep_earlier_work"]

logger = logging.getLogger(__name__)


def keep_earlier_work(config: RunConfig, store: RunStore, summary: RunSummary, attempt: Attempt) -> None:
    """Keep the complete batches of the run's earlier attempts, fold the images done in the others into
    batches of `attempt`, and bill the calls of the images left unfinished (`RunSummary.add_lost`): as
    repeated, those in flight and those whose answers the new tries do not take."""
    prices = operation_prices(config)
    reused = resumable_operations(config.analyses)
    listed = store.control_files(summary.run_id)
    complete = store.batches(summary.run_id, listed)
    segments = store.run_manifests(summary.run_id)  # none final: the run would be committed
    committed = {batch for segment in segments for batch in segment.batches}
    missing = store.missing(entry for batch in complete for entry in batch.files)
    if missing:
        logger.info("resume: %d files of complete batches are missing: not kept", len(missing))
    kept = keep_complete_batches(complete, {entry.path for entry in missing}, committed)
    _check_segments(summary.run_id, committed, kept)
    kept_keys = {image.key for batch in kept for image in batch.images}
    # Images of kept batches: their records are not read (the batch's record has their outcome and calls).
    covered = {
        image_record_path(summary.run_id, batch.attempt, image.key, image.etag)
        for batch in kept
        for image in batch.images
    }
    records = store.images(summary.run_id, listed, besides=covered)
    records = [record for record in records if record.attempt < attempt.record.attempt]
    done, others = sort_leftovers(records, kept_keys)
    context = run_context(config, attempt.record)
    folded: list[BatchRecord] = []
    for images in done:
        folded.append(finish_batch(context, attempt.next_batch, images, store.s3_client))
        attempt.next_batch += 1
    for batch in (*kept, *folded):
        for image in batch.images:
            attempt.ledger.listed(image.key, image.etag)
        attempt.add(batch, committed=(batch.attempt, batch.batch) in committed)
        summary.add_batch(batch, prices)
    attempt.segments = summary.segments = len(segments)
    attempt.segment_counts = sum((Counter(segment.counts) for segment in segments), Counter())
    for record in others:  # in (attempt, batch) order: the last unfinished record of a key is resumed
        summary.add_lost(
            record.calls, record.retries, record.thrown_away(() if record.done else reused), prices
        )
        if not record.done:
            attempt.resumable[record.key] = (record.etag, record.attempt)
    attempt.kept_keys = frozenset(image.key for batch in (*kept, *folded) for image in batch.images)
    summary.kept_batches = len(kept)
    summary.kept_images = len(attempt.kept_keys)


def _check_segments(run_id: str, committed: set[tuple[int, int]], kept: list[BatchRecord]) -> None:
    """Every batch a committed segment of the run lists must have its record: its images are in the
    tables, and the run's accounting and bill need their outcomes and calls."""
    lost = committed - {(batch.attempt, batch.batch) for batch in kept}
    if lost:
        attempt, batch = min(lost)
        raise RunAborted(
            f"run {run_id}: {len(lost)} batches its segments committed have no record "
            f"(first: {batch_record_path(run_id, attempt, batch)}); it cannot be finished"
        )
