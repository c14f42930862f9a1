"""What one Dask task does: analyse a batch of images and write the batch's rows as Parquet files.

A task never raises for a bad image: each image ends as one `images` row (analysed, rejected, failed
or skipped) plus its result rows and error rows. Each image gets only the analyses the driver planned
for it (an incremental run skips what committed runs already settled). The task writes its files,
then the batch's record (`batch.core.manifest.BatchRecord`: the batch is complete), and returns that record:
file names with row counts and checksums, each image's outcome, call counts. It never commits.

Tasks may run twice (Dask re-runs the tasks of a lost worker): file names depend only on the run, the
attempt and the batch number, so a second run of a task rewrites the same files.
"""

from __future__ import annotations

import functools
import gc
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from distributed import get_worker
from PIL import Image

from batch.run import faults
from batch.analyses import REGISTRY, Analysis, in_run_order
from batch.analyses._multi import ImageInput
from batch.storage.commits import RunStore
from batch.config.model import RekognitionConfig
from batch.core.convert import UnusableImage, forbid_decompression_bombs, to_jpeg
from batch.core.geometry import upright_size
from batch.core.image_checks import CONVERSION_ERROR, ImageRules, Refusal, Route, plan_image
from batch.core.image_header import ImageHeader
from batch.core.incremental import Digests, settled_analyses
from batch.aws.logs import pin_aws_loggers
from batch.core.manifest import BatchRecord, ImageOutcome, data_file_name
from batch.aws.ratelimit import ClusterRateLimiter
from batch.aws.rekognition import CallCounts, CallResult, RekognitionCaller, rekognition_client
from batch.core.retry import IMAGE_ERRORS, Outcome, RetryBudget, error_code
from batch.aws.s3 import read_header, read_object, s3_client
from batch.core.selection import ListedObject
from batch.storage.sink import Destination, write_tables
from batch.core.tables import ERRORS_SCHEMA, IMAGES_SCHEMA

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RunContext:
    """What every task of a run shares (small and picklable: it travels with each task)."""

    run_id: str
    attempt: int
    dt: str
    bucket: str
    analyses: tuple[str, ...]
    analysis_settings: Mapping[str, Any]
    #: What an image settled for each analysis records (`batch.analyses.settled_digests`): stored in
    #: the `images` rows' `analyses_done` for incremental runs.
    settings_digests: Mapping[str, Digests]
    rekognition: RekognitionConfig
    destination: Destination
    compression: str
    #: Threads that may share one worker process's clients (Dask threads x max calls in flight per task).
    threads_per_process: int


@dataclass(frozen=True)
class ImageToAnalyse:
    """A listed object and the analyses it needs in this run (in the run's order)."""

    obj: ListedObject
    analyses: tuple[str, ...]
    #: For an analysis settled part by part, the parts it still needs when not all (positions in
    #: `settled_digests`; compare_faces: the reference photos it was not compared with yet).
    parts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchSpec:
    context: RunContext
    index: int
    images: tuple[ImageToAnalyse, ...]
    #: Images analysed at once in this task (planned by the driver with Little's law).
    calls_in_flight: int

    @property
    def file_name(self) -> str:
        return data_file_name(self.context.run_id, self.context.attempt, self.index)


@dataclass
class BatchResult:
    record: BatchRecord
    #: Seconds spent in answered attempts, and how many, for the driver's latency estimate.
    latency_seconds: float = 0.0
    answered: int = 0
    #: One-line reason when an error says the whole run cannot succeed (e.g. AccessDeniedException).
    fatal: str | None = None
    #: Attempts by Unix second, operation and outcome class (`batch.core.timeline`), for `call_seconds`.
    call_seconds: dict[tuple[int, str, str], int] = field(default_factory=dict)


@dataclass
class _ImageResult:
    image_row: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]
    errors: list[dict[str, Any]]
    fatal: str | None = None
    #: Analyses that failed but settled some of their parts: name -> positions among the parts run.
    settled_parts: dict[str, tuple[int, ...]] = field(default_factory=dict)


def process_batch(spec: BatchSpec) -> BatchResult:
    """The Dask task: analyse every image of the batch, write its tables, return the counts."""
    context = spec.context
    rekognition, s3, limiter, budget = _process_resources(context.rekognition, context.threads_per_process)
    counts = CallCounts()
    caller = RekognitionCaller(rekognition, context.rekognition.retry_policy, limiter, counts, budget=budget)
    stop = threading.Event()

    def one(position: int, planned: ImageToAnalyse) -> _ImageResult:
        faults.kill_worker_on_key(planned.obj.key)  # tests only: a poison image
        order = in_run_order(planned.analyses, start=position)
        image = analyse_image(planned.obj, context, caller, s3, stop, analyses=order, parts=planned.parts)
        done = settled_analyses(image.image_row["status"], image.image_row["analyses"], planned.analyses)
        image.image_row["analyses_done"] = [
            {"analysis": name, "settings_digest": digest}
            for name in done
            for digest in _settled_now(context.settings_digests[name], planned.parts.get(name))
        ] + [
            {"analysis": name, "settings_digest": digest}
            for name, positions in image.settled_parts.items()
            if name not in done
            for digest in _settled_now(context.settings_digests[name], planned.parts.get(name), positions)
        ]
        return image

    pool = _image_threads()
    # The process's tasks share its image threads: Little's law plans calls in flight per task slot.
    pool.grow_to(spec.calls_in_flight * _task_slots())
    futures = [pool.submit(one, position, planned) for position, planned in enumerate(spec.images)]
    results = [future.result() for future in futures]

    rows_by_table: dict[str, list[dict[str, Any]]] = {"images": [], "errors": []}
    fatal = None
    for image in results:
        rows_by_table["images"].append(image.image_row)
        rows_by_table["errors"].extend(image.errors)
        for table, rows in image.rows.items():
            rows_by_table.setdefault(table, []).extend(rows)
        fatal = fatal or image.fatal
    record = finish_batch(spec, rows_by_table, s3, counts)
    return BatchResult(record, counts.latency_seconds, counts.answered, fatal, dict(counts.per_second))


def _settled_now(
    digests: Digests, parts: tuple[int, ...] | None, positions: tuple[int, ...] | None = None
) -> tuple[str, ...]:
    """The digests an image settled for one analysis now: its settings digest, or the parts it ran
    (`parts`: their positions among all, None: all), or of those only the ones at `positions`."""
    if isinstance(digests, str):
        return (digests,)
    ran = tuple(digests) if parts is None else tuple(digests[i] for i in parts)
    return ran if positions is None else tuple(ran[i] for i in positions)


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


def analyse_image(
    obj: ListedObject,
    context: RunContext,
    caller: RekognitionCaller,
    s3: Any,
    stop: threading.Event,
    *,
    analyses: tuple[str, ...],
    parts: Mapping[str, tuple[int, ...]] | None = None,
) -> _ImageResult:
    """Probe one image's header, send it as planned (or refuse it before any call), run `analyses`
    one after the other in the order given (`batch.analyses.in_run_order`), and build its rows."""
    common = {"run_id": context.run_id, "bucket": context.bucket, "key": obj.key, "etag": obj.etag}
    result = _ImageResult(image_row={}, rows={}, errors=[])
    try:
        header = read_header(s3, context.bucket, obj)
        prepared = prepare_image(s3, context.bucket, context.rekognition, obj, header)
    except (ClientError, BotoCoreError) as exc:
        # Deleted or replaced since the listing (the reads are pinned to the listed ETag), or S3 down.
        code = error_code(exc)
        result.errors.append(
            {
                **common,
                "analysis": None,
                "operation": "GetObject",
                "error_code": code,
                "message": str(exc)[:500],
                "attempts": 1,
                "retryable": False,
            }
        )
        result.image_row = _image_row(
            common, obj, header=None, status="failed", reason=f"S3 read failed: {code}", analyses=[]
        )
        return result
    if isinstance(prepared, Refusal):
        # Not sent: the header (or the conversion) already shows Rekognition would refuse it.
        result.errors.append(_refusal_error(common, prepared))
        result.image_row = _image_row(
            common, obj, header=header, status=prepared.status, reason=prepared.code, analyses=[]
        )
        return result
    image, header, frame, sent = prepared.image, prepared.header, prepared.frame, prepared.sent

    succeeded: list[str] = []
    status, reason = "analysed", None
    pixels = _pixels_once(image, s3, context.bucket, obj)
    for name in analyses:
        if stop.is_set():
            status, reason = "failed", "run aborted"
            break
        source = ImageInput(image, pixels, frame.box_placement, result.rows)
        analysis, settings = REGISTRY[name], context.analysis_settings[name]
        if parts and name in parts:  # only the parts not settled yet (compare_faces: new references)
            settings = analysis.only_parts(settings, parts[name])
        operation, call = _run_analysis(
            analysis,
            settings,
            context=context,
            key=obj.key,
            source=source,
            caller=caller,
            common=common,
            result=result,
        )
        if call is None:
            succeeded.append(name)
            continue
        result.errors.append(
            {
                **common,
                "analysis": name,
                "operation": operation,
                "error_code": call.error_code,
                "message": call.message,
                "attempts": call.attempts,
                "retryable": bool(call.outcome and call.outcome.retryable),
            }
        )
        if call.outcome is Outcome.FATAL or call.budget_exhausted:
            result.fatal = f"{operation}: {call.error_code}: {call.message}"
            if call.budget_exhausted:
                result.fatal = f"Rekognition keeps failing, retry budget spent; last error {result.fatal}"
            stop.set()
            status, reason = "failed", call.error_code
            break
        if call.error_code in IMAGE_ERRORS and analysis.run is None:
            # The image itself is unusable: the other analyses would fail the same way. Not so for the
            # several calls of face search and comparison: they also send face crops and reference
            # faces, and an InvalidParameterException may be about those, not the image.
            status, reason = "rejected", call.error_code
            break
        status, reason = "failed", call.error_code
    # The row lists them in the run's order, whatever order this image ran them in.
    succeeded.sort(key=context.analyses.index)
    result.image_row = _image_row(
        common, obj, header=header, status=status, reason=reason, analyses=succeeded, sent=sent
    )
    return result


def _run_analysis(
    analysis: Analysis,
    settings: Any,
    *,
    context: RunContext,
    key: str,
    source: ImageInput,
    caller: RekognitionCaller,
    common: dict[str, Any],
    result: _ImageResult,
) -> tuple[str, CallResult | None]:
    """Call one analysis for the image under `settings` and add its rows to `result`; (operation, the
    failed call or None when it succeeded)."""
    shared = {**common, **analysis.shared_columns(settings)}
    if analysis.run is not None:
        # Several calls per image (face search): the module makes them through `caller`.
        outcome = analysis.run(source, settings, caller.call)
        for table, rows in outcome.rows.items():
            result.rows.setdefault(table, []).extend({**shared, **row} for row in rows)
        if outcome.failed and outcome.settled_parts:
            result.settled_parts[analysis.name] = outcome.settled_parts
        return outcome.failed or (analysis.operation, None)
    call = caller.call(
        analysis.client_method, analysis.operation, analysis.request(source.image, key, settings)
    )
    if call.response is None:
        return analysis.operation, call
    placement = source.placement(
        call.response.get(analysis.orientation_field) if analysis.orientation_field else None
    )
    for table, rows in analysis.flatten(call.response, placement).items():
        result.rows.setdefault(table, []).extend({**shared, **row} for row in rows)
    return analysis.operation, None


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send: the request's `Image` member and the facts its rows need."""

    image: dict[str, Any]
    #: The image's own facts for its `images` row (read from the whole file when it was converted).
    header: ImageHeader
    #: The facts that fix the frame of Rekognition's answers (see `_answer_frame`).
    frame: ImageHeader
    #: The `images` row's `sent_*` columns.
    sent: dict[str, Any]


#: Conversions decoding at once in one worker process: each may hold hundreds of MB of pixels.
CONVERSIONS_PER_PROCESS = 2


def prepare_image(
    s3: Any,
    bucket: str,
    config: RekognitionConfig,
    obj: ListedObject,
    header: ImageHeader,
    *,
    data: bytes | None = None,
) -> PreparedImage | Refusal:
    """Plan from the header; read the object only to send its bytes or to convert it (`data`: the
    object's bytes when the caller has them already, e.g. a reference photo)."""
    rules = _image_rules(config)
    route = plan_image(obj.size, header, rules)
    if isinstance(route, Refusal):
        return route
    if route is Route.S3_OBJECT:
        image = {"S3Object": {"Bucket": bucket, "Name": obj.key}}
        return PreparedImage(image, header, header, {"sent_as": route.value})
    if data is None:
        data = read_object(s3, bucket, obj)
    if route is Route.BYTES:
        sent = {"sent_as": route.value, "sent_bytes": len(data)}
        return PreparedImage({"Bytes": data}, header, header, sent)
    return _converted(data, header, rules.max_pixels, obj.key)


def _converted(data: bytes, header: ImageHeader, max_pixels: int | None, key: str) -> PreparedImage | Refusal:
    with _conversion_slots():
        try:
            converted = to_jpeg(data, header.format or "", max_pixels=max_pixels)
        except UnusableImage as exc:
            return exc.refusal
        except Exception as exc:
            # Not one of Pillow's failures for a bad file: a bug, but one image's, not the run's.
            logger.exception("converting %r failed", key)
            return Refusal("failed", CONVERSION_ERROR, f"{type(exc).__name__}: {exc}"[:500])
    sent = {
        "sent_as": Route.CONVERTED_JPEG.value,
        "sent_bytes": len(converted.data),
        "sent_width": converted.width,
        "sent_height": converted.height,
    }
    source = converted.source
    return PreparedImage({"Bytes": converted.data}, source, _answer_frame(source), sent)


def _answer_frame(source: ImageHeader) -> ImageHeader:
    """The facts that place the boxes of a converted image: it was sent upright and without Exif, so
    Rekognition answers in the original's upright frame, as it answers a JPEG carrying the original's
    orientation. The pixel columns stay in the original's pixels (the copy may be downscaled)."""
    return ImageHeader("JPEG", source.stored_width, source.stored_height, source.exif_orientation)


def _refusal_error(common: dict[str, Any], refusal: Refusal) -> dict[str, Any]:
    return {
        **common,
        "analysis": None,
        "operation": None,
        "error_code": refusal.code,
        "message": refusal.reason,
        "attempts": 0,
        "retryable": False,
    }


def _image_rules(config: RekognitionConfig) -> ImageRules:
    return ImageRules(
        image_source=config.image_source,
        convert_to_jpeg=config.convert_to_jpeg,
        max_convert_bytes=config.max_convert_bytes,
        max_pixels=Image.MAX_IMAGE_PIXELS,
    )


@functools.cache
def _conversion_slots() -> threading.BoundedSemaphore:
    """The process's conversion slots; the first use also makes Pillow's bomb warning an error here."""
    forbid_decompression_bombs()
    return threading.BoundedSemaphore(CONVERSIONS_PER_PROCESS)


def _pixels_once(image: Mapping[str, Any], s3: Any, bucket: str, obj: ListedObject) -> Callable[[], bytes]:
    """The bytes of the image as sent, read from S3 on first use when it was sent as a reference."""
    if "Bytes" in image:
        data: bytes = image["Bytes"]
        return lambda: data
    return functools.cache(lambda: read_object(s3, bucket, obj))


def _image_row(
    common: dict[str, Any],
    obj: ListedObject,
    *,
    header: ImageHeader | None,
    status: str,
    reason: str | None,
    analyses: list[str],
    sent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        **common,
        "size_bytes": obj.size,
        "last_modified": obj.last_modified,
        "status": status,
        "status_reason": reason,
        "analyses": analyses,
        "exif_orientation": 1,
        **(sent or {}),
    }
    if header is not None and header.stored_width is not None and header.stored_height is not None:
        width, height = upright_size(header.stored_width, header.stored_height, header.orientation)
        row.update(
            format=header.format,
            stored_width=header.stored_width,
            stored_height=header.stored_height,
            exif_orientation=header.orientation,
            width=width,
            height=height,
        )
    elif header is not None and header.problem and status == "analysed":
        row["status_reason"] = header.problem
    return row


class ImageThreads:
    """The image threads of one worker process, shared by all the tasks that run in it.

    Each task queues its images here and waits for them. A pool per task let a task's calls in flight
    fall off as its last images finished one by one, and tasks that started together ended together:
    a measured run dipped to 40-50 % of the quota for a second at every batch boundary. Shared, the
    threads move on to the next task's queued images, so calls in flight stay at the plan until the
    run itself runs out of images. Threads are added as the plan grows and never removed (the plan is
    bounded by `rekognition.max_calls_in_flight` per task slot). Work is served first in, first out.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0

    def grow_to(self, count: int) -> None:
        with self._lock:
            while self._threads < count:
                self._threads += 1
                name = f"rekbatch-image-{self._threads}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, functools.partial(fn, *args)))
        return future

    def _serve(self) -> None:
        while True:
            future, work = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to the task that waits for it
                future.set_exception(exc)


@functools.cache
def _image_threads() -> ImageThreads:
    return ImageThreads()


def _task_slots() -> int:
    """Tasks this worker process runs at once (its Dask threads); 1 outside a Dask worker."""
    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not in a Dask worker
        return 1


#: `gc.set_threshold` in a worker process (see `_tune_collector`).
COLLECTOR_THRESHOLDS = (20_000, 50, 100)


def _tune_collector() -> None:
    """Exclude every object alive now from the garbage collector's scans (`gc.freeze`), and collect
    the young generations less often.

    Once the clients exist, most of the process's objects live as long as it does: the imported
    modules and botocore's service models and endpoint rules, loaded as nested dicts and lists. Every
    full collection traversed them all. botocore leaves a little cyclic garbage on each call (its
    response parsers), so full collections come every few seconds under load, and they stopped a
    worker for 50-450 ms each, holding the GIL: the calls that came due meanwhile went out together,
    and the endpoint throttled some (`make bench`). After the freeze the longest mid-run pause was 16 ms.
    A frozen object is still freed when its last reference goes; only a reference cycle among frozen
    objects would stay until the process exits, and at this point they are the start-up state, which
    lives that long anyway.

    The thresholds: CPython collects the youngest generation every 700 net allocations of container
    objects, and botocore allocates thousands per call, most freed by reference counting before a
    collection could see them. In a 7,500-call run on one worker the collections took 0.49 s
    (0.065 ms per call) with the default (700, 10, 10), and 0.04 s with these; the worker's peak RSS
    went from 188.3 to 189.9 MB.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


@functools.cache
def _process_resources(
    config: RekognitionConfig, threads: int
) -> tuple[Any, Any, ClusterRateLimiter, RetryBudget]:
    """One Rekognition client, one S3 client, one cluster rate limiter and one retry budget per
    worker process.

    boto3 clients don't pickle, so they can't travel with tasks; clients are thread-safe once
    created, so the process's task threads share them. Built on first use in each process, in a
    task's own thread: the limiter must find its Dask worker there (`get_worker` does not work in
    the task's image threads).
    """
    pin_aws_loggers()  # this process's own levels: no credentials or image bytes in a worker's log
    pool = max(10, threads)
    budget = RetryBudget(config.retry_budget_ratio, config.retry_budget_capacity)
    resources = rekognition_client(config, pool), s3_client(pool), ClusterRateLimiter.for_worker(), budget
    _tune_collector()
    return resources
