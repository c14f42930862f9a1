"""One run of the batch job: plan from the listing, fan batches out to Dask, account, commit, summarise.

1. A run id that is already committed ends here (`already-committed`, exit 0, no calls). Otherwise the
   process claims an attempt number (create-only), and with `--resume` keeps the complete batches of
   the run's earlier attempts (`batch.core.manifest.keep_complete_batches`).
2. The listing is streamed and planned: each image gets the analyses it still needs given what
   committed runs settled (`batch.core.incremental`; `--full` ignores them); an image needing none is
   `unchanged` and is sent nowhere.
3. Batches run on Dask in a bounded window. Each task writes its files and its batch record and returns
   the record. A task that fails outright (KilledWorker after a worker died twice under it, a write
   error) has its images retried one per task, one at a time (`batch.aws.executor.Backlog`), so a poison
   image ends `failed` on its own. The driver keeps counts, file entries and a ledger of 16-byte
   digests, never rows, so its memory stays flat.
4. Commit: the ledger must be clean (every listed image has exactly one outcome, no analysis settled
   twice), then the `runs` row is written and the manifest created, create-only. Another attempt having
   created it first is a lost race. An aborted run (e.g. AccessDeniedException) never commits.
"""

from __future__ import annotations

import itertools
import json
import logging
import resource
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from batch.faces import references
from batch.run import faults
from batch.analyses import REGISTRY, settings_digest, settled_digests
from batch.faces.sync import (
    STORAGE_OPERATIONS,
    CollectionSync,
    KnownFaces,
    StorageForecast,
    collection_caller,
    known_faces,
)
from batch.storage.commits import RunStore
from batch.core.concurrency import ConcurrencyPlan, LatencyEstimate
from batch.config.model import RunConfig, parse_s3_url
from batch.core.errors import (
    CommitRaceLost,
    ConfigError,
    NothingToAnalyse,
    OutputUnwritable,
    RekbatchError,
    RunAborted,
    TooManyErrors,
)
from batch.aws.executor import Backlog, dashboard_address, dask_client, run_windowed, worker_threads
from batch.core.incremental import CommittedState, Digests
from batch.core.manifest import (
    OUTCOMES,
    AttemptRecord,
    BatchRecord,
    FileEntry,
    ImageOutcome,
    Ledger,
    Manifest,
    error_rate,
    keep_complete_batches,
    manifest_path,
    runs_file_name,
)
from batch.aws.ratelimit import install_quota
from batch.storage.readers import committed_state
from batch.aws.rekognition import CallCounts, driver_caller
from batch.core.retry import error_code
from batch.aws.s3 import check_readable, check_writable, list_pages, s3_client
from batch.core.selection import ListedObject, is_selected
from batch.storage.sink import Destination, write_tables
from batch.core.tables import CALL_SECONDS_SCHEMA, RUNS_SCHEMA
from batch.core.timeline import SecondKey, timeline_rows
from batch.run.worker import BatchSpec, ImageToAnalyse, RunContext, finish_batch, process_batch

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did; printed for people and written as JSON and as the `runs` row."""

    run_id: str
    input: str
    output: str
    analyses: tuple[str, ...]
    config_digest: str
    command_line: str
    started_at: datetime
    ended_at: datetime | None = None
    #: running, completed (committed), aborted, lost-race, already-committed, empty or dry-run.
    status: str = "running"
    reason: str | None = None
    #: `listed` and one count per outcome (`batch.core.manifest.OUTCOMES`).
    images: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    throttled: int = 0
    files: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    #: The per-image calls (the analyses' operations) at list price; storage calls are apart.
    estimated_cost_usd: float = 0.0
    dashboard: str | None = None
    #: CPU seconds of the worker processes (gathered before the cluster closes).
    worker_cpu_seconds: float = 0.0
    #: CPU seconds of all the job's processes from the first batch to the last (start-up excluded).
    processing_cpu_seconds: float = 0.0
    attempt: int = 0
    resumed: bool = False
    #: Batches of earlier attempts that a resumed run kept, and batches split after their task failed.
    kept_batches: int = 0
    split_batches: int = 0
    full: bool = False
    max_error_rate: float = 1.0
    #: Where the manifest is, once this attempt (or an earlier one) committed the run.
    manifest: str | None = None
    #: Attempts by Unix second, operation and outcome class: the `call_seconds` table.
    call_seconds: Counter[SecondKey] = field(default_factory=Counter)
    #: Calls per second allowed per operation, across the cluster.
    quotas: dict[str, float] = field(default_factory=dict)
    #: Where the run report was written, or why it was not.
    report: str | None = None
    report_error: str | None = None
    #: index_faces: the collection, faces stored at the start, faces deleted to keep it in sync
    #: (orphans, older ETags, pruned keys), faces stored at the end, and what storing them costs per
    #: month; the storage calls (`batch.faces.sync.STORAGE_OPERATIONS`) at `[pricing]
    #: storage_operation`. A dry run fills them with what a run would do (`forecast`).
    collection: str | None = None
    faces_stored_before: int | None = None
    faces_deleted: int = 0
    faces_pruned: int = 0
    faces_stored: int | None = None
    storage_cost_usd_month: float = 0.0
    storage_cost_usd: float = 0.0
    forecast: StorageForecast | None = None
    #: compare_faces: the reference photos and the faces cut out of them (none in a dry run).
    reference_photos: int = 0
    reference_faces: int = 0

    @property
    def seconds(self) -> float:
        end = self.ended_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    @property
    def error_rate(self) -> float:
        return error_rate(self.images)

    def problem(self) -> RekbatchError | None:
        """Why the run exits non-zero (a one-line reason and its exit code), or None."""
        if self.status == "aborted":
            return RunAborted(f"run {self.run_id} aborted, nothing committed: {self.reason}")
        if self.status == "lost-race":
            return CommitRaceLost(
                f"run {self.run_id}: another attempt committed it first; "
                f"attempt {self.attempt}'s files are not read"
            )
        if self.status == "empty":
            return NothingToAnalyse(f"no images under {self.input}; nothing committed")
        if self.status == "completed" and self.error_rate > self.max_error_rate:
            return TooManyErrors(
                f"run {self.run_id} committed, but {self.error_rate:.1%} of the images sent were rejected "
                f"or failed (max error rate {self.max_error_rate:g})"
            )
        return None

    @property
    def exit_code(self) -> int:
        problem = self.problem()
        return problem.exit_code if problem else 0

    @property
    def committed(self) -> bool:
        return self.status in ("completed", "already-committed")

    def call_counts(self) -> list[dict[str, Any]]:
        """Attempts by operation and outcome, as the JSON summary and the `runs` table give them."""
        return [
            {"operation": op, "outcome": outcome, "count": n}
            for (op, outcome), n in sorted(self.calls.items())
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "committed": self.committed,
            "manifest": self.manifest,
            "attempt": self.attempt,
            "resumed": self.resumed,
            "kept_batches": self.kept_batches,
            "split_batches": self.split_batches,
            "full": self.full,
            "input": self.input,
            "output": self.output,
            "analyses": list(self.analyses),
            "config_digest": self.config_digest,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": round(self.seconds, 3),
            "images": dict(self.images),
            "error_rate": round(self.error_rate, 6),
            "max_error_rate": self.max_error_rate,
            "calls": self.call_counts(),
            "retries": self.retries,
            "throttled": self.throttled,
            "files": self.files,
            "rows": dict(self.rows),
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
            "collection": self.collection,
            "faces_stored_before": self.faces_stored_before,
            "faces_deleted": self.faces_deleted,
            "faces_pruned": self.faces_pruned,
            "faces_stored": self.faces_stored,
            "storage_cost_usd_month": round(self.storage_cost_usd_month, 6),
            "storage_cost_usd": round(self.storage_cost_usd, 6),
            "reference_photos": self.reference_photos,
            "reference_faces": self.reference_faces,
            "dashboard": self.dashboard,
            "report": self.report,
            "cpu_seconds": {
                "driver": round(_cpu_seconds(), 3),
                "workers": round(self.worker_cpu_seconds, 3),
                "processing": round(self.processing_cpu_seconds, 3),
            },
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def new_run_id(now: datetime) -> str:
    """Sortable, unique, and free of colons (Athena's partition repair fails on them)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run(config: RunConfig, *, command_line: str = "", out: TextIO = sys.stdout) -> RunSummary:
    """Run the job as configured; return its summary (also printed to `out`)."""
    started = datetime.now(UTC)
    summary = RunSummary(
        run_id=config.resume or config.run_id or new_run_id(started),
        input=config.input,
        output=config.output,
        analyses=config.analyses,
        config_digest=config.digest(),
        command_line=command_line,
        started_at=started,
        resumed=bool(config.resume),
        full=config.full,
        max_error_rate=config.max_error_rate,
    )
    s3 = s3_client()
    check_readable(s3, config.bucket, config.prefix)
    if config.dry_run:
        _dry_run(config, s3, summary)
    else:
        _check_output(config, s3)
        _run(config, s3, summary)
        if summary.status == "completed" and config.report.enabled:  # this attempt committed the run
            _write_report(config, summary, s3)
    summary.ended_at = summary.ended_at or datetime.now(UTC)
    print(format_summary(summary, dry_run=config.dry_run), file=out)
    if config.summary_json:
        Path(config.summary_json).write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return summary


def settings_digests(config: RunConfig) -> dict[str, str]:
    """Each analysis of the run -> the digest of its settings, in the run's order (the manifest's)."""
    return {name: settings_digest(REGISTRY[name], config.analysis_settings[name]) for name in config.analyses}


def wanted_digests(config: RunConfig) -> dict[str, Digests]:
    """Each analysis of the run -> what an image settled for it records (`settled_digests`), in order."""
    return {name: settled_digests(REGISTRY[name], config.analysis_settings[name]) for name in config.analyses}


def selected_objects(config: RunConfig, s3: Any) -> Iterator[ListedObject]:
    """The images under the prefix, streamed page by page from the listing."""
    for page in list_pages(s3, config.bucket, config.prefix):
        yield from (obj for obj in page if is_selected(obj, config.prefix, config.input_filter))


def plan_images(
    objects: Iterable[ListedObject],
    ledger: Ledger,
    state: CommittedState,
    wanted: Mapping[str, Digests],
    *,
    skip_keys: frozenset[str] = frozenset(),
    limit: int = 0,
) -> Iterator[ImageToAnalyse]:
    """The listed images that need analyses, each with the analyses it needs; the others are recorded
    `unchanged` in the ledger. Keys in `skip_keys` (kept by a resumed run) are passed over; at most
    `limit` images are yielded (0: no limit) and the listing is not read past the last one."""
    sent = 0
    for obj in objects:
        if obj.key in skip_keys:
            continue
        needed = state.needed(obj.key, obj.etag, wanted)
        if needed and limit and sent >= limit:
            return
        ledger.listed(obj.key, obj.etag)
        if not needed:
            ledger.record(ImageOutcome(obj.key, obj.etag, "unchanged"))
            continue
        sent += 1
        yield ImageToAnalyse(obj, needed, _missing_parts(state, obj, needed, wanted))


def _missing_parts(
    state: CommittedState, obj: ListedObject, needed: tuple[str, ...], wanted: Mapping[str, Digests]
) -> dict[str, tuple[int, ...]]:
    """For the needed analyses settled part by part, the parts this image still needs when not all."""
    parts = {}
    for name in needed:
        digests = wanted[name]
        if not isinstance(digests, str):
            missing = state.missing_parts(obj.key, obj.etag, name, digests)
            if len(missing) < len(digests):
                parts[name] = missing
    return parts


def _dry_run(config: RunConfig, s3: Any, summary: RunSummary) -> None:
    store = RunStore(Destination(config.output), s3) if config.output else None
    config = _resolve_references(config, s3, summary, store, detect=False)
    state = _committed_state(config, s3) if config.output else CommittedState()
    sync = _preview_collection(config, s3, summary)
    _index_lost_faces_again(state, sync)
    ledger = Ledger()
    summary.images = ledger.counts
    planned = plan_images(
        _listed_in(selected_objects(config, s3), sync),
        ledger,
        state,
        wanted_digests(config),
        limit=config.limit,
    )
    for image in planned:
        if sync is not None and "index_faces" in image.analyses:
            sync.foresee_indexing(image.obj.key, sent=image.obj.size > 0)
        if image.obj.size == 0:
            summary.images["skipped"] += 1
            continue
        summary.images["to_analyse"] += 1
        for name in image.analyses:
            settings = config.analysis_settings[name]
            if name in image.parts:
                settings = REGISTRY[name].only_parts(settings, image.parts[name])
            calls = REGISTRY[name].planned_calls(settings)
            summary.calls[(REGISTRY[name].operation, "planned")] += calls
            summary.estimated_cost_usd += calls * config.prices[name]
    if sync is not None:
        _forecast_storage(config, sync, summary)
    summary.status = "dry-run"


def _preview_collection(config: RunConfig, s3: Any, summary: RunSummary) -> CollectionSync | None:
    """Dry run with index_faces: the collection's faces and what the tables know of them, read with
    DescribeCollection and ListFaces only (`summary.forecast`)."""
    if "index_faces" not in config.analyses:
        return None
    sync = _collection_sync(config, summary)
    known = KnownFaces()
    if config.output:
        store = RunStore(Destination(config.output), s3)
        known = known_faces(store, store.manifests(), (), sync.collection)
    sync.preview(known, config.prefix)
    return sync


def _forecast_storage(config: RunConfig, sync: CollectionSync, summary: RunSummary) -> None:
    """Fill the summary's collection fields with what a run would do (as `_close_collection` does)."""
    if config.prune:
        sync.foresee_prune()
    summary.forecast = forecast = sync.forecast
    calls = forecast.calls()
    summary.calls.update({(operation, "planned"): n for operation, n in calls.items()})
    summary.storage_cost_usd = calls.total() * config.prices["storage_operation"]
    summary.faces_stored_before = forecast.faces_before
    summary.faces_deleted, summary.faces_pruned = forecast.deleted, forecast.pruned
    summary.faces_stored = forecast.faces_after
    summary.storage_cost_usd_month = forecast.faces_after * config.prices["face_storage_month"]


def _committed_state(config: RunConfig, s3: Any) -> CommittedState:
    """What committed runs under the output settled (nothing with `--full`)."""
    if config.full:
        return CommittedState()
    if config.output.startswith("s3://"):
        check_writable(s3, parse_s3_url(config.output, "output")[0])
    store = RunStore(Destination(config.output), s3)
    return committed_state(store, store.manifests())


def _check_output(config: RunConfig, s3: Any) -> None:
    if config.output.startswith("s3://"):
        check_writable(s3, parse_s3_url(config.output, "output")[0])
        return
    try:
        Path(config.output).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputUnwritable(f"cannot create output folder {config.output}: {exc.strerror}") from None


@dataclass
class _Attempt:
    """This process's attempt on the run: its record, the ledger and the files it will commit."""

    record: AttemptRecord
    ledger: Ledger = field(default_factory=Ledger)
    files: list[FileEntry] = field(default_factory=list)
    #: Attempts whose batches are committed with this one (itself, and earlier ones on resume).
    attempts: set[int] = field(default_factory=set)
    kept_keys: frozenset[str] = frozenset()

    def add(self, record: BatchRecord) -> None:
        for image in record.images:
            self.ledger.record(image)
        self.files.extend(record.files)
        self.attempts.add(record.attempt)


def _run(config: RunConfig, s3: Any, summary: RunSummary) -> None:
    store = RunStore(Destination.for_output(config.output, config.output_options), s3)
    if store.manifest(summary.run_id) is not None:
        summary.status = "already-committed"
        summary.manifest = store.destination.location(manifest_path(summary.run_id))
        return
    config = _resolve_references(config, s3, summary, store, detect=True)
    summary.config_digest = config.digest()  # with the references' ETags
    attempt = _start_attempt(config, store, summary)
    summary.images = attempt.ledger.counts
    state = _committed_state(config, s3)
    sync = _open_collection(config, store, summary, attempt)
    _index_lost_faces_again(state, sync)
    _run_batches(config, s3, summary, attempt, state, sync=sync)
    if sync is not None:
        _close_collection(config, sync, summary)
    if summary.status == "aborted":
        return
    if attempt.ledger.counts["listed"] == 0:
        summary.status = "empty"
        return
    _commit(config, store, summary, attempt)


def _open_collection(
    config: RunConfig, store: RunStore, summary: RunSummary, attempt: _Attempt
) -> CollectionSync | None:
    """With index_faces: create the collection if missing and delete the faces the tables don't know."""
    if "index_faces" not in config.analyses:
        return None
    sync = _collection_sync(config, summary)
    sync.open(known_faces(store, store.manifests(), attempt.files, sync.collection), config.prefix)
    return sync


def _index_lost_faces_again(state: CommittedState, sync: CollectionSync | None) -> None:
    """Images whose faces the collection lost are not settled for index_faces, whatever the tables
    say: the collection must hold every face of the current images."""
    for key, etag in sync.lost if sync is not None else ():
        state.unsettle(key, etag, "index_faces")


def _collection_sync(config: RunConfig, summary: RunSummary) -> CollectionSync:
    collection = config.analysis_settings["index_faces"].collection
    summary.collection = collection
    counts = CallCounts()
    return CollectionSync(collection_caller(config, counts), collection, counts)


def _resolve_references(
    config: RunConfig, s3: Any, summary: RunSummary, store: RunStore | None, *, detect: bool
) -> RunConfig:
    """With compare_faces: `config` with its references resolved (`batch.faces.references`), before any
    batch. `detect`: cut their faces out (DetectFaces per photo version not cut out by an earlier run
    into `store`, counted and priced as compare_faces); a dry run counts those calls instead."""
    if "compare_faces" not in config.analyses:
        return config
    counts = CallCounts()
    cache = references.FaceCache(store) if store is not None else None
    caller = driver_caller(config, "faces", counts) if detect else None  # the DetectFaces quota
    config = references.resolve(config, s3, caller, cache)
    settings = config.analysis_settings["compare_faces"]
    summary.reference_photos, summary.reference_faces = (
        len(settings.resolved.images),
        len(settings.resolved.faces),
    )
    if not detect:
        uncut = [
            i for i in settings.resolved.images if cache is None or cache.get(i, settings.crop_margin) is None
        ]
        counts.attempts[("DetectFaces", "planned")] = len(uncut)
    summary.calls.update(+counts.attempts)
    billed = sum(n for (_, outcome), n in counts.attempts.items() if outcome in ("ok", "planned"))
    summary.estimated_cost_usd += billed * config.prices["compare_faces"]
    return config
    counts = CallCounts()
    caller = driver_caller(config, "faces", counts) if detect else None  # the DetectFaces quota
    config = references.resolve(config, s3, caller)
    resolved = config.analysis_settings["compare_faces"].resolved
    summary.reference_photos, summary.reference_faces = len(resolved.images), len(resolved.faces)
    if not detect:
        counts.attempts[("DetectFaces", "planned")] = len(resolved.images)
    summary.calls.update(counts.attempts)
    billed = sum(n for (_, outcome), n in counts.attempts.items() if outcome in ("ok", "planned"))
    summary.estimated_cost_usd += billed * config.prices["compare_faces"]
    return config


def _close_collection(config: RunConfig, sync: CollectionSync, summary: RunSummary) -> None:
    """Prune (when asked and the run went through), then count the storage calls and faces."""
    if config.prune and summary.status != "aborted" and sync.listing_complete:
        summary.faces_pruned = sync.prune()
    summary.faces_stored_before = sync.faces_before
    summary.faces_deleted = sync.deleted
    summary.faces_stored = sync.face_count()
    counts = sync.counts
    summary.calls.update(counts.attempts)
    storage_calls = sum(n for (_, outcome), n in counts.attempts.items() if outcome == "ok")
    summary.storage_cost_usd = storage_calls * config.prices["storage_operation"]
    summary.storage_cost_usd_month = (summary.faces_stored or 0) * config.prices["face_storage_month"]


def _start_attempt(config: RunConfig, store: RunStore, summary: RunSummary) -> _Attempt:
    """Claim this process's attempt number; on `--resume`, check the run and keep its complete batches."""
    previous = store.attempts(summary.run_id)
    started_at, dt = summary.started_at, summary.started_at.strftime("%Y-%m-%d")
    if config.resume:
        if not previous:
            raise ConfigError(f"run.resume: no attempt of run {config.resume} under {config.output}")
        first = previous[0]
        if (first.input, first.config_digest) != (config.input, config.digest()):
            raise ConfigError(
                f"run.resume: run {config.resume} ran over {first.input} with config {first.config_digest}; "
                f"this is {config.input} with config {config.digest()}"
            )
        started_at, dt = first.started_at, first.dt  # the run keeps its date partition
    record = store.claim_attempt(
        AttemptRecord(summary.run_id, len(previous) + 1, started_at, dt, config.input, config.digest())
    )
    attempt = _Attempt(record, attempts={record.attempt})
    summary.attempt = record.attempt
    if config.resume:
        kept = keep_complete_batches(store.batches(summary.run_id))
        for batch in kept:
            for image in batch.images:
                attempt.ledger.listed(image.key, image.etag)
            attempt.add(batch)
            _add(summary, batch, config)
        attempt.kept_keys = frozenset(image.key for batch in kept for image in batch.images)
        summary.kept_batches = len(kept)
    return attempt


def _run_batches(
    config: RunConfig,
    s3: Any,
    summary: RunSummary,
    attempt: _Attempt,
    state: CommittedState,
    *,
    sync: CollectionSync | None = None,
) -> None:
    destination = Destination.for_output(config.output, config.output_options)
    wanted = wanted_digests(config)
    with dask_client(config.dask) as client:
        processes, threads = worker_threads(client)
        # One quota per operation for the whole cluster, held by the scheduler (batch.aws.ratelimit).
        quotas: dict[str, float] = {}
        for name in config.analyses:
            for operation in REGISTRY[name].operations:
                quotas.setdefault(operation, config.quota(name))
        install_quota(client, quotas, default=config.rekognition.tps)
        summary.quotas = quotas
        cpu_before = _cpu_seconds() + sum(client.run(_cpu_seconds).values())
        summary.dashboard = dashboard_address(client)
        logger.info(
            "Dask: %d worker processes, %d threads; dashboard %s", processes, threads, summary.dashboard
        )
        context = RunContext(
            run_id=summary.run_id,
            attempt=attempt.record.attempt,
            dt=attempt.record.dt,
            bucket=config.bucket,
            analyses=config.analyses,
            analysis_settings={name: config.analysis_settings[name] for name in config.analyses},
            settings_digests=wanted,
            rekognition=config.rekognition,
            destination=destination,
            compression=config.output_options.compression,
            threads_per_process=config.dask.threads_per_worker * config.rekognition.max_calls_in_flight,
        )
        plan = ConcurrencyPlan(
            total_rate=sum(quotas.values()),
            task_slots=threads,
            max_per_task=config.rekognition.max_calls_in_flight,
        )
        latency = LatencyEstimate(config.rekognition.expected_latency)

        def in_flight() -> int:
            return config.rekognition.calls_in_flight or plan.per_task(latency.seconds)

        def batch_size() -> int:
            # A task has at most its batch's images in flight: a batch twice the planned concurrency
            # keeps the task's threads busy for most of it.
            return max(config.dask.batch_size, 2 * in_flight())

        counter = _Counted(_listed_in(selected_objects(config, s3), sync))
        planned = plan_images(
            counter, attempt.ledger, state, wanted, skip_keys=attempt.kept_keys, limit=config.limit
        )
        indices = itertools.count()
        backlog = Backlog(
            BatchSpec(context, next(indices), tuple(images), in_flight())
            for images in _synced(_batched(planned, batch_size), sync)
        )
        window = config.dask.batches_in_flight or 2 * threads
        progress = Progress(quotas)
        if sys.stderr.isatty():
            print(f"Dask dashboard: {summary.dashboard}", file=sys.stderr)
        for spec, result, error in run_windowed(
            client, process_batch, backlog, window=window, key=lambda spec: f"batch-{spec.file_name}"
        ):
            quarantined = backlog.finished(spec)
            if error is not None and not quarantined and summary.status != "aborted":
                # Which image took the task down is unknown: retry each alone, so only it fails.
                backlog.quarantine(BatchSpec(context, next(indices), (image,), 1) for image in spec.images)
                summary.split_batches += 1
                continue
            if error is None:
                record, fatal = result.record, result.fatal
                latency.update(result.latency_seconds, result.answered)
                summary.call_seconds.update(result.call_seconds)
            else:
                record, fatal = _record_failed_batch(spec, error, s3), None
            attempt.add(record)
            _add(summary, record, config)
            logger.debug(
                "batch %s: %d images, %d files", spec.file_name, len(record.images), len(record.files)
            )
            progress.listed_total = counter.total
            progress.tick(summary)
            if fatal and summary.status != "aborted":
                summary.status, summary.reason = "aborted", fatal
                backlog.close()  # submit nothing more; let the batches in flight finish
        progress.close()
        summary.worker_cpu_seconds = sum(client.run(_cpu_seconds).values())
        summary.processing_cpu_seconds = _cpu_seconds() + summary.worker_cpu_seconds - cpu_before


def _listed_in(objects: Iterable[ListedObject], sync: CollectionSync | None) -> Iterator[ListedObject]:
    """The listing, telling the collection sync each key it shows (for --prune)."""
    for obj in objects:
        if sync is not None:
            sync.plan.listed(obj.key)
        yield obj
    if sync is not None:
        sync.listing_complete = True


def _synced(
    batches: Iterable[list[ImageToAnalyse]], sync: CollectionSync | None
) -> Iterator[list[ImageToAnalyse]]:
    """Each batch once the stored faces of its images to index are deleted: never a duplicate."""
    for batch in batches:
        if sync is not None:
            sync.before_indexing(image.obj.key for image in batch if "index_faces" in image.analyses)
        yield batch


def _batched(images: Iterable[ImageToAnalyse], size: Callable[[], int]) -> Iterator[list[ImageToAnalyse]]:
    """Lists of `size()` images (asked again for each batch), consuming the stream lazily."""
    iterator = iter(images)
    while batch := list(itertools.islice(iterator, size())):
        yield batch


class _Counted:
    """Wraps the listing stream: counts what went through, and knows the total once it has ended."""

    def __init__(self, objects: Iterator[ListedObject]) -> None:
        self._objects = objects
        self.seen = 0
        self.total: int | None = None

    def __iter__(self) -> Iterator[ListedObject]:
        for obj in self._objects:
            self.seen += 1
            yield obj
        self.total = self.seen


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (runs on the workers too, through client.run)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _record_failed_batch(spec: BatchSpec, error: BaseException, s3: Any) -> BatchRecord:
    """A task that failed outright: its images become `failed` rows, each with an error row."""
    context = spec.context
    code = error_code(error)
    message = " ".join(str(error).split())[:500]
    images, errors = [], []
    for planned in spec.images:
        obj = planned.obj
        common = {"run_id": context.run_id, "bucket": context.bucket, "key": obj.key, "etag": obj.etag}
        images.append(
            {
                **common,
                "size_bytes": obj.size,
                "last_modified": obj.last_modified,
                "exif_orientation": 1,
                "status": "failed",
                "status_reason": f"task failed: {code}",
                "analyses": [],
                "analyses_done": [],
            }
        )
        errors.append(
            {
                **common,
                "analysis": None,
                "operation": None,
                "error_code": code,
                "message": message,
                "attempts": 0,
                "retryable": True,
            }
        )
    return finish_batch(spec, {"images": images, "errors": errors}, s3, CallCounts())


def _add(summary: RunSummary, record: BatchRecord, config: RunConfig) -> None:
    summary.calls.update(record.calls)
    summary.retries += record.retries
    summary.throttled += record.throttled
    summary.files += len(record.files)
    for written in record.files:
        summary.rows[written.table] += written.rows
    for operation, price in operation_prices(config).items():
        summary.estimated_cost_usd += record.calls.get((operation, "ok"), 0) * price


def operation_prices(config: RunConfig) -> dict[str, float]:
    """US dollars per successful call of each operation the run's analyses make: the price of the
    first analysis (in the run's order) that calls it (face_search's DetectFaces is priced once)."""
    prices: dict[str, float] = {}
    for name in config.analyses:
        for operation in REGISTRY[name].operations:
            prices.setdefault(operation, config.prices[name])
    return prices


def _commit(config: RunConfig, store: RunStore, summary: RunSummary, attempt: _Attempt) -> None:
    """Check the accounting, write the `runs` row, create the manifest: the run's one commit point."""
    problems = attempt.ledger.problems()
    if problems:
        summary.status, summary.reason = "aborted", "accounting check failed: " + "; ".join(problems)
        return
    summary.status = "completed"  # what the runs row says; readers only ever see it if the commit wins
    summary.ended_at = datetime.now(UTC)
    try:
        won = _write_commit(config, store, summary, attempt)
    except (OSError, ClientError, BotoCoreError) as exc:
        summary.status, summary.reason = "aborted", f"commit failed: {exc}"
        return
    if not won:
        summary.status = "lost-race"
        return
    summary.manifest = store.destination.location(manifest_path(summary.run_id))
    logger.debug("committed %s: %d files", summary.manifest, len(attempt.files))


def _write_commit(config: RunConfig, store: RunStore, summary: RunSummary, attempt: _Attempt) -> bool:
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
    return store.commit(manifest)


def _write_runs_row(
    config: RunConfig, summary: RunSummary, record: AttemptRecord, store: RunStore
) -> tuple[FileEntry, ...]:
    """The run's own tables: its `runs` row and its `call_seconds` timeline, listed in the manifest."""
    row = {
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
        "storage_cost_usd": summary.storage_cost_usd,
        "status": summary.status,
        "error_rate": summary.error_rate,
        "exit_code": summary.exit_code,
        "attempt": summary.attempt,
        "resumed": summary.resumed,
        "kept_batches": summary.kept_batches,
        "full": summary.full,
    }
    timeline = timeline_rows(
        summary.call_seconds,
        started_at=summary.started_at,
        quotas=summary.quotas,
        common={"run_id": summary.run_id, "bucket": config.bucket, "key": config.prefix, "etag": None},
    )
    written = write_tables(
        store.destination,
        {"call_seconds": timeline, "runs": [row]},
        {"call_seconds": CALL_SECONDS_SCHEMA, "runs": RUNS_SCHEMA},
        dt=record.dt,
        name=runs_file_name(summary.run_id, record.attempt),
        compression=config.output_options.compression,
        s3_client=store.s3_client,
    )
    summary.files += len(written)
    return tuple(written)


def _write_report(config: RunConfig, summary: RunSummary, s3: Any) -> None:
    from batch.report.page import write_report  # matplotlib and Jinja2 only when a report is written

    try:
        summary.report = write_report(
            config.output, summary.run_id, config.report, s3, output_options=config.output_options
        )
    except Exception as exc:  # the tables are written: a report that fails must not fail the run
        logger.debug("run report failed", exc_info=True)
        summary.report_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def format_summary(summary: RunSummary, *, dry_run: bool = False) -> str:
    """A short summary for people."""
    images = summary.images
    lines = []
    if dry_run:
        lines.append(
            f"dry run over {summary.input}: {images['listed']} images listed, "
            f"{images['to_analyse']} to analyse, {images['unchanged']} unchanged since a committed run, "
            f"{images['skipped']} zero-byte to skip"
        )
        # Calls per face (face search, comparison) are counted once per image or reference: at least.
        per_face = {REGISTRY[n].operation for n in summary.analyses if REGISTRY[n].run is not None}
        for (operation, _), n in sorted(summary.calls.items()):
            if operation not in STORAGE_OPERATIONS:
                lines.append(f"  would call {operation} {'at least ' * (operation in per_face)}{n} times")
        if summary.reference_photos:
            lines.append(
                f"  {summary.reference_photos} reference photos: one CompareFaces per image and face "
                "in them (a dry run does not detect their faces)"
            )
        called = "DescribeCollection and ListFaces only" if summary.forecast else "nothing"
        cost = f"{'at least ' * bool(per_face)}${summary.estimated_cost_usd:.4f}"
        lines.append(f"  estimated cost of the image calls at list price: {cost} (called {called})")
        if summary.forecast is not None:
            lines += _forecast_lines(summary, summary.forecast)
        return "\n".join(lines)
    lines.append(
        f"run {summary.run_id}: {summary.status} in {summary.seconds:.1f} s"
        + (f" ({summary.reason})" if summary.reason else "")
    )
    if summary.status == "already-committed":
        lines.append(f"  nothing to do: committed earlier ({summary.manifest})")
        return "\n".join(lines)
    resumed = f", resumed with {summary.kept_batches} batches kept" if summary.resumed else ""
    lines.append(f"  attempt {summary.attempt}{resumed}; committed: {'yes' if summary.committed else 'no'}")
    lines.append(
        f"  images: {images['listed']} listed: {images['analysed']} analysed, {images['rejected']} rejected, "
        f"{images['failed']} failed, {images['skipped']} skipped, {images['unchanged']} unchanged"
    )
    by_operation: dict[str, list[str]] = {}
    for (operation, outcome), n in sorted(summary.calls.items()):
        by_operation.setdefault(operation, []).append(f"{n} {outcome}")
    for operation, parts in by_operation.items():
        lines.append(f"  {operation}: {', '.join(parts)}")
    lines.append(
        f"  retries: {summary.retries}, throttled: {summary.throttled}; "
        f"estimated cost of the image calls ${summary.estimated_cost_usd:.4f}"
    )
    if summary.collection is not None:
        lines.append(
            f"  collection {summary.collection}: {summary.faces_stored_before} faces before, "
            f"{summary.faces_stored} stored (${summary.storage_cost_usd_month:.4f}/month); "
            f"{summary.faces_deleted} deleted to stay in sync, {summary.faces_pruned} of them pruned; "
            f"storage calls ${summary.storage_cost_usd:.4f}"
        )
    if summary.reference_photos:
        lines.append(f"  references: {summary.reference_faces} faces in {summary.reference_photos} photos")
    tables = ", ".join(f"{t} {n}" for t, n in sorted(summary.rows.items())) or "none new"
    lines.append(f"  output: {summary.output} ({summary.files} files; rows: {tables})")
    if summary.report or summary.report_error:
        lines.append(f"  report: {summary.report or f'not written: {summary.report_error}'}")
    return "\n".join(lines)


def _forecast_lines(summary: RunSummary, forecast: StorageForecast) -> list[str]:
    """The dry run's collection lines: what a run would delete, its storage calls, faces after."""
    state = f"{forecast.faces_before} faces stored" if forecast.exists else "missing: a run would create it"
    calls = forecast.calls()
    deletes = calls.pop("DeleteFaces", 0)
    listed = ", ".join(f"{operation} {n}" for operation, n in sorted(calls.items()))
    pruned = f"{forecast.pruned} of keys no longer listed" if forecast.pruning else "no --prune"
    return [
        f"  collection {summary.collection}: {state}",
        f"  would delete {forecast.deleted} faces: {forecast.orphans} orphans, {forecast.replaced} of "
        f"{forecast.replaced_images} images to index again, {pruned}",
        f"  storage calls: {listed}, DeleteFaces at most {deletes}: ${summary.storage_cost_usd:.4f} "
        "at list price, apart from the image calls",
        f"  faces stored after: about {forecast.faces_after} (${summary.storage_cost_usd_month:.4f}/month; "
        f"{forecast.images_to_index} images to index at {forecast.faces_per_image:.1f} faces each)",
    ]


class Progress:
    """One status line on stderr every few seconds when it is a terminal; silent under cron and Airflow.

    Shows images done, successful calls per second per operation against the quota, throttles, errors,
    and an ETA once the listing has ended (before that the total is not known: the listing is streamed).
    """

    def __init__(
        self, quotas: Mapping[str, float], *, every: float = 2.0, stream: TextIO = sys.stderr
    ) -> None:
        self._quotas = quotas
        self._every = every
        self._stream = stream
        self._enabled = stream.isatty()
        self._started = self._last = time.monotonic()
        self.listed_total: int | None = None

    def tick(self, summary: RunSummary) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < self._every:
            return
        self._last = now
        print(f"\r\033[K{self.line(summary, now - self._started)}", end="", file=self._stream, flush=True)

    def line(self, summary: RunSummary, elapsed: float) -> str:
        done = sum(n for status, n in summary.images.items() if status != "listed")
        rates = " ".join(
            f"{op.removeprefix('Detect')} {n / max(elapsed, 1e-9):.0f}/{self._quotas.get(op, 0):g}"
            for (op, outcome), n in sorted(summary.calls.items())
            if outcome == "ok"
        )
        errors = summary.images["rejected"] + summary.images["failed"]
        text = f"{done} images, calls/s {rates or '-'}, {summary.throttled} throttled, {errors} errors"
        if self.listed_total and done:
            text += f", ETA {(self.listed_total - done) * elapsed / done:.0f} s"
        return text

    def close(self) -> None:
        if self._enabled:
            print(file=self._stream)
