"""What one Dask task does: analyse a batch of images, keep each image's record as it goes, and write the
batch's rows as Parquet files.

Each image gets only the analyses the driver planned for it. Before each of its calls, and once it is
done, the task writes the image's record (`batch.core.image_record`), so a crash costs only the calls in
flight: a try of the image that finds its record done takes its rows instead of calling again, and one
that finds it unfinished takes the answers it holds and calls again only what was in flight. Then the
task writes the batch's files, then the batch's record (`batch.core.manifest.BatchRecord`: the batch is
complete), and returns that record; it never commits. A task may run twice (Dask re-runs a lost
worker's tasks): one that finds its batch's record returns it, and file names depend only on the run,
the attempt and the batch number. A write or a look-up the output refuses, of a record or a file, is
returned to the driver, which stops the run (exit 3).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

from batch.analyses.registry import REGISTRY, in_run_order, resumable_operations
from batch.aws.regions import RegionalLimiter
from batch.aws.rekognition import Limiter, RekognitionCaller
from batch.core.calls import CallCounts, ImageCalls
from batch.core.errors import OutputUnreadable, OutputUnwritable
from batch.core.image_record import ImageRecord, batch_record
from batch.core.incremental import settled_analyses, settled_now
from batch.core.manifest import BatchRecord, data_file_name
from batch.core.redaction import one_line
from batch.core.retry import error_code
from batch.core.selection import ListedObject
from batch.core.silence import SilenceWatch
from batch.core.tables import ERRORS_SCHEMA, IMAGES_SCHEMA, error_row, image_row
from batch.run import faults
from batch.run.context import BatchSpec, ImageToAnalyse, RunContext
from batch.run.image_pipeline import ImageResult, analyse_image, silence_reason
from batch.run.progress import ProgressFeed, progress_feed, progress_topic
from batch.run.runtime import (
    image_threads,
    new_batches_stopped,
    process_resources,
    regional_client,
    silence_watch,
    task_slots,
)
from batch.storage.commits import RunStore
from batch.storage.sink import write_tables

__all__ = [
    "BatchResult",
    "OutputFailure",
    "finish_batch",
    "process_batch",
    "record_failed_batch",
    "table_schemas",
]

#: The output refusing a write, or a read of the run's own records: the run stops, exit 3.
OutputFailure = OutputUnwritable | OutputUnreadable


@dataclass
class BatchResult:
    """What a task returns to the driver: the batch's record and what the driver's planning learns."""

    #: None: the task recorded nothing (the run was stopping, or the endpoint fell silent): `--resume`
    #: keeps its images done in their records and analyses the others again.
    record: BatchRecord | None
    #: Seconds spent in answered attempts, and how many, for the driver's latency estimate.
    latency_seconds: float = 0.0
    answered: int = 0
    #: One-line reason when an error says the whole run cannot succeed (e.g. AccessDeniedException).
    fatal: str | None = None
    #: Attempts by Unix second, operation and outcome class (`batch.core.timeline`), for `call_seconds`.
    call_seconds: dict[tuple[int, str, str], int] = field(default_factory=dict)


class ImageJournal:
    """One try of one image (`batch.core.calls.CallJournal`): its calls written in the image's record
    before each is sent (a crash then bills that call as in flight), the answers it gets, and the
    record with the image's rows once done.

    `earlier` is the image's unfinished record: of this attempt (a try that died: its calls are carried,
    those in flight as repeated, and its answers taken), or of an earlier one (`--resume`: only its
    answers of `reused` operations are taken; the resume bills its calls)."""

    def __init__(
        self,
        store: RunStore,
        context: RunContext,
        batch: int,
        obj: ListedObject,
        *,
        earlier: ImageRecord | None,
        reused: Collection[str],
        feed: ProgressFeed | None = None,
    ) -> None:
        self._store = store
        self._feed, self._topic = feed, progress_topic(context.run_key)
        self._run_id = context.run_id
        self._base = ImageRecord(obj.key, obj.etag, context.attempt, batch)
        self._answers: dict[tuple[str, str], Mapping[str, Any]] = {}
        if earlier is not None and earlier.attempt == context.attempt:
            self._base = dataclasses.replace(
                self._base, calls=earlier.calls, retries=earlier.retries, repeated=earlier.thrown_away()
            )
            self._answers.update(earlier.answers)
        elif earlier is not None:
            self._answers.update((key, answer) for key, answer in earlier.answers.items() if key[0] in reused)
        self._calls = ImageCalls()

    def cached(self, operation: str, digest: str) -> Mapping[str, Any] | None:
        return self._answers.get((operation, digest))

    def sending(self, operation: str, *, retry: bool) -> None:
        self._calls.sending(operation, retry=retry)
        self._store.write_image(self._run_id, self._now(answers=self._answers))

    def answered(
        self, operation: str, outcome: str, digest: str = "", response: Mapping[str, Any] | None = None
    ) -> None:
        self._calls.answered(operation, outcome)
        if self._feed is not None:
            self._feed.call(self._topic, operation, outcome)
        if response is not None:
            self._answers[(operation, digest)] = response

    def done(self, image: ImageResult) -> ImageRecord:
        rows = {"images": [image.image_row], "errors": image.errors, **image.rows}
        record = self._now(rows=rows, fatal=image.fatal)
        self._store.write_image(self._run_id, record)
        return record

    def _now(self, **more: Any) -> ImageRecord:
        calls = Counter(self._base.calls) + self._calls.counts()
        retries = self._base.retries + self._calls.retries
        return dataclasses.replace(self._base, calls=dict(calls), retries=retries, **more)


def process_batch(spec: BatchSpec) -> BatchResult | OutputFailure:
    """The Dask task: analyse every image of the batch, keeping each one's record, write its tables,
    return the counts; or the output's refusal of a file or record (returned, not raised: the run
    stops, exit 3, and no task crash is logged). A task of a run that is stopping returns at once; one
    whose process's calls fell silent returns without waiting for them; neither records the batch."""
    context = spec.context
    if new_batches_stopped(context.run_key):
        return BatchResult(None)
    rekognition, s3, limiter, budget = process_resources(context.rekognition, context.threads_per_process)
    store = RunStore(context.destination, s3)
    try:
        complete = store.batch(context.run_id, context.attempt, spec.index)
    except OutputUnreadable as refused:
        return refused
    if complete is not None:  # this task ran before, and its worker died after it wrote the record
        return BatchResult(complete)
    counts = CallCounts()
    silence = silence_watch(context.run_key, context.rekognition.silent_abort_seconds)
    caller = RekognitionCaller(
        rekognition, context.rekognition.retry_policy, limiter, counts, budget=budget, silence=silence
    )
    regional = _regional_callers(context, limiter, counts, budget=budget, silence=silence)
    stop = threading.Event()
    reused = resumable_operations(context.analyses)
    feed, topic = progress_feed(), progress_topic(context.run_key)

    def one(position: int, planned: ImageToAnalyse) -> ImageRecord:
        record = analysed(position, planned)
        feed.image(topic, spec.index, record.rows["images"][0]["status"])
        return record

    def analysed(position: int, planned: ImageToAnalyse) -> ImageRecord:
        obj = planned.obj
        faults.kill_worker_on_key(obj.key)  # tests only: a poison image
        earlier = store.image(context.run_id, context.attempt, obj.key, obj.etag)
        if earlier is not None and earlier.done:  # an earlier try of it in this attempt finished it
            return earlier
        if earlier is None and planned.resumes:
            earlier = store.image(context.run_id, planned.resumes, obj.key, obj.etag)
        journal = ImageJournal(store, context, spec.index, obj, earlier=earlier, reused=reused, feed=feed)
        order = in_run_order(planned.analyses, start=position)
        call = functools.partial(caller.call, journal=journal)
        calls = {region: functools.partial(other.call, journal=journal) for region, other in regional.items()}
        image = analyse_image(
            obj,
            context,
            call,
            s3,
            stop,
            analyses=order,
            parts=planned.parts,
            regional=calls,
            region=planned.region,
        )
        image.image_row["analyses_done"] = _analyses_done(context, planned, image)
        return journal.done(image)

    pool = image_threads()
    # The process's tasks share its image threads: Little's law plans calls in flight per task slot.
    pool.grow_to(spec.calls_in_flight * task_slots())
    try:
        futures = [pool.submit(one, position, planned) for position, planned in enumerate(spec.images)]
        if not _wait_unless_silent(futures, silence):
            stop.set()  # the images in flight end at their next timeout, and call nothing more
            for future in futures:
                future.cancel()
            return BatchResult(None, fatal=silence_reason(context))
        try:
            images = [future.result() for future in futures]
            record = finish_batch(context, spec.index, images, s3)
        except (OutputUnwritable, OutputUnreadable) as refused:  # a record, a file or the batch's record
            return refused
        fatal = next((image.fatal for image in images if image.fatal), None)
        return BatchResult(record, counts.latency_seconds, counts.answered, fatal, dict(counts.per_second))
    finally:
        feed.forget(topic, spec.index)  # the batch's record counts its images from now on


def _regional_callers(
    context: RunContext,
    limiter: Limiter,
    counts: CallCounts,
    **shared: Any,
) -> dict[str, RekognitionCaller]:
    """A caller per region of the run other than its own (`rekognition.regions`): that region's client,
    the cluster limiter's buckets of that region, and the task's counts, retry budget and silence."""
    plan = context.regions
    if plan is None:
        return {}
    return {
        region: RekognitionCaller(
            regional_client(context.rekognition, region, context.threads_per_process),
            context.rekognition.retry_policy,
            RegionalLimiter(limiter, region, plan.home),
            counts,
            **shared,
        )
        for region in plan.regions
        if region != plan.home
    }


#: Seconds between two looks at the silence of the process's calls while a task waits for its images.
SILENCE_POLL_SECONDS = 1.0


def _wait_unless_silent(futures: list[Future[ImageRecord]], silence: SilenceWatch) -> bool:
    """Wait for every image; False, without waiting for the rest, once `silence` expired (calls stuck
    in a read that will only time out)."""
    pending: set[Future[ImageRecord]] = set(futures)
    while pending:
        _, pending = wait(pending, timeout=SILENCE_POLL_SECONDS)
        if pending and silence.expired():
            return False
    return True


def _analyses_done(context: RunContext, planned: ImageToAnalyse, image: ImageResult) -> list[dict[str, str]]:
    """The `images` row's `analyses_done`: what this image settled, with the settings' digests."""
    answered = [*image.image_row["analyses"], *image.refused]
    done = settled_analyses(image.image_row["status"], answered, planned.analyses)
    return [
        {"analysis": name, "settings_digest": digest}
        for name in done
        for digest in settled_now(context.settings_digests[name], planned.parts.get(name))
    ] + [
        {"analysis": name, "settings_digest": digest}
        for name, positions in image.settled_parts.items()
        if name not in done
        for digest in settled_now(context.settings_digests[name], planned.parts.get(name), positions)
    ]


def finish_batch(context: RunContext, index: int, images: Sequence[ImageRecord], s3: Any) -> BatchRecord:
    """Write batch `index`'s files from its images' done records, then its record (the batch is
    complete); return the record."""
    rows_by_table: dict[str, list[Any]] = {"images": [], "errors": []}
    for image in images:
        for table, rows in image.rows.items():
            rows_by_table.setdefault(table, []).extend(rows)
    files = write_tables(
        context.destination,
        rows_by_table,
        table_schemas(context.analyses),
        dt=context.dt,
        name=data_file_name(context.run_id, context.attempt, index),
        compression=context.compression,
        s3_client=s3,
    )
    record = batch_record(context.attempt, index, files, images)
    RunStore(context.destination, s3).write_batch(context.run_id, record)
    return record


def table_schemas(analyses: tuple[str, ...]) -> dict[str, Any]:
    schemas = {"images": IMAGES_SCHEMA, "errors": ERRORS_SCHEMA}
    for name in analyses:
        schemas.update(REGISTRY[name].tables)
    return schemas


def record_failed_batch(spec: BatchSpec, error: BaseException, s3: Any) -> BatchRecord:
    """A task that failed outright (its worker died under it twice, a write error): its images become
    `failed` rows, each with an error row, written as the batch's files and record. What their tries
    cost (their records) is billed as repeated: the next run analyses them again."""
    context = spec.context
    store = RunStore(context.destination, s3)
    code = error_code(error)
    message = one_line(str(error))
    images = []
    for planned in spec.images:
        obj = planned.obj
        common = {"run_id": context.run_id, "bucket": context.bucket, "key": obj.key, "etag": obj.etag}
        row = image_row(
            common,
            size_bytes=obj.size,
            last_modified=obj.last_modified,
            status="failed",
            reason=f"task failed: {code}",
        )
        errors = [error_row(common, code=code, message=message, retryable=True)]
        record = ImageRecord(
            obj.key, obj.etag, context.attempt, spec.index, rows={"images": [row], "errors": errors}
        )
        earlier = store.image(context.run_id, context.attempt, obj.key, obj.etag)
        if earlier is not None:  # its calls are paid, and its answers thrown away
            record = dataclasses.replace(
                record, calls=earlier.calls, retries=earlier.retries, repeated=earlier.thrown_away(())
            )
        images.append(record)
    return finish_batch(context, spec.index, images, s3)
