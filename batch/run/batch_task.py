"""What one Dask task does: analyse a batch of images and write the batch's rows as Parquet files.

Each image gets only the analyses the driver planned for it. The task writes its files, then the
batch's record (`batch.core.manifest.BatchRecord`: the batch is complete), and returns that record; it
never commits. A task may run twice (Dask re-runs a lost worker's tasks): its file names depend only on
the run, the attempt and the batch number, so a second run rewrites the same files.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

from batch.analyses.registry import REGISTRY, in_run_order
from batch.aws.rekognition import RekognitionCaller
from batch.core.calls import CallCounts
from batch.core.errors import OutputUnwritable
from batch.core.incremental import settled_analyses, settled_now
from batch.core.manifest import BatchRecord, ImageOutcome
from batch.core.redaction import one_line
from batch.core.retry import error_code
from batch.core.silence import SilenceWatch
from batch.core.tables import ERRORS_SCHEMA, IMAGES_SCHEMA, error_row, image_row
from batch.run import faults
from batch.run.context import BatchSpec, ImageToAnalyse
from batch.run.image_pipeline import ImageResult, analyse_image, silence_reason
from batch.run.runtime import (
    image_threads,
    new_batches_stopped,
    process_resources,
    silence_watch,
    task_slots,
)
from batch.storage.commits import RunStore
from batch.storage.sink import write_tables

__all__ = ["BatchResult", "finish_batch", "process_batch", "record_failed_batch", "table_schemas"]


@dataclass
class BatchResult:
    """What a task returns to the driver: the batch's record and what the driver's planning learns."""

    #: None: the task recorded nothing (the run was stopping, or the endpoint fell silent): `--resume`
    #: analyses its images again.
    record: BatchRecord | None
    #: Seconds spent in answered attempts, and how many, for the driver's latency estimate.
    latency_seconds: float = 0.0
    answered: int = 0
    #: One-line reason when an error says the whole run cannot succeed (e.g. AccessDeniedException).
    fatal: str | None = None
    #: Attempts by Unix second, operation and outcome class (`batch.core.timeline`), for `call_seconds`.
    call_seconds: dict[tuple[int, str, str], int] = field(default_factory=dict)


def process_batch(spec: BatchSpec) -> BatchResult | OutputUnwritable:
    """The Dask task: analyse every image of the batch, write its tables, return the counts; or the
    output's refusal of its files (returned, not raised: the run stops, and no task crash is logged).
    A task of a run that is stopping returns at once; one whose process's calls fell silent returns
    without waiting for them; neither records anything."""
    context = spec.context
    if new_batches_stopped(context.run_key):
        return BatchResult(None)
    rekognition, s3, limiter, budget = process_resources(context.rekognition, context.threads_per_process)
    counts = CallCounts()
    silence = silence_watch(context.run_key, context.rekognition.silent_abort_seconds)
    caller = RekognitionCaller(
        rekognition, context.rekognition.retry_policy, limiter, counts, budget=budget, silence=silence
    )
    stop = threading.Event()

    def one(position: int, planned: ImageToAnalyse) -> ImageResult:
        faults.kill_worker_on_key(planned.obj.key)  # tests only: a poison image
        order = in_run_order(planned.analyses, start=position)
        image = analyse_image(planned.obj, context, caller, s3, stop, analyses=order, parts=planned.parts)
        done = settled_analyses(image.image_row["status"], image.image_row["analyses"], planned.analyses)
        image.image_row["analyses_done"] = [
            {"analysis": name, "settings_digest": digest}
            for name in done
            for digest in settled_now(context.settings_digests[name], planned.parts.get(name))
        ] + [
            {"analysis": name, "settings_digest": digest}
            for name, positions in image.settled_parts.items()
            if name not in done
            for digest in settled_now(context.settings_digests[name], planned.parts.get(name), positions)
        ]
        return image

    pool = image_threads()
    # The process's tasks share its image threads: Little's law plans calls in flight per task slot.
    pool.grow_to(spec.calls_in_flight * task_slots())
    futures = [pool.submit(one, position, planned) for position, planned in enumerate(spec.images)]
    if not _wait_unless_silent(futures, silence):
        stop.set()  # the images in flight end at their next timeout, and call nothing more
        for future in futures:
            future.cancel()
        return BatchResult(None, fatal=silence_reason(context))
    results = [future.result() for future in futures]

    rows_by_table: dict[str, list[dict[str, Any]]] = {"images": [], "errors": []}
    fatal = None
    for image in results:
        rows_by_table["images"].append(image.image_row)
        rows_by_table["errors"].extend(image.errors)
        for table, rows in image.rows.items():
            rows_by_table.setdefault(table, []).extend(rows)
        fatal = fatal or image.fatal
    try:
        record = finish_batch(spec, rows_by_table, s3, counts)
    except OutputUnwritable as unwritable:
        return unwritable
    return BatchResult(record, counts.latency_seconds, counts.answered, fatal, dict(counts.per_second))


#: Seconds between two looks at the silence of the process's calls while a task waits for its images.
SILENCE_POLL_SECONDS = 1.0


def _wait_unless_silent(futures: list[Future[ImageResult]], silence: SilenceWatch) -> bool:
    """Wait for every image; False, without waiting for the rest, once `silence` expired (calls stuck
    in a read that will only time out)."""
    pending: set[Future[ImageResult]] = set(futures)
    while pending:
        _, pending = wait(pending, timeout=SILENCE_POLL_SECONDS)
        if pending and silence.expired():
            return False
    return True


def finish_batch(
    spec: BatchSpec, rows_by_table: Mapping[str, list[dict[str, Any]]], s3: Any, counts: CallCounts
) -> BatchRecord:
    """Write the batch's files, then its record (the batch is complete); return the record."""
    context = spec.context
    files = write_tables(
        context.destination,
        rows_by_table,
        table_schemas(context.analyses),
        dt=context.dt,
        name=spec.file_name,
        compression=context.compression,
        s3_client=s3,
    )
    images = tuple(
        ImageOutcome(
            row["key"], row["etag"], row["status"], tuple(d["analysis"] for d in row["analyses_done"])
        )
        for row in rows_by_table["images"]
    )
    record = BatchRecord(
        context.attempt,
        spec.index,
        tuple(files),
        images,
        dict(counts.attempts),
        counts.retries,
        counts.throttled,
    )
    RunStore(context.destination, s3).write_batch(context.run_id, record)
    return record


def table_schemas(analyses: tuple[str, ...]) -> dict[str, Any]:
    schemas = {"images": IMAGES_SCHEMA, "errors": ERRORS_SCHEMA}
    for name in analyses:
        schemas.update(REGISTRY[name].tables)
    return schemas


def record_failed_batch(spec: BatchSpec, error: BaseException, s3: Any) -> BatchRecord:
    """A task that failed outright (its worker died under it twice, a write error): its images become
    `failed` rows, each with an error row, written as the batch's files and record."""
    code = error_code(error)
    message = one_line(str(error))
    images, errors = [], []
    for planned in spec.images:
        obj = planned.obj
        common = {
            "run_id": spec.context.run_id,
            "bucket": spec.context.bucket,
            "key": obj.key,
            "etag": obj.etag,
        }
        images.append(
            image_row(
                common,
                size_bytes=obj.size,
                last_modified=obj.last_modified,
                status="failed",
                reason=f"task failed: {code}",
            )
        )
        errors.append(error_row(common, code=code, message=message, retryable=True))
    return finish_batch(spec, {"images": images, "errors": errors}, s3, CallCounts())
