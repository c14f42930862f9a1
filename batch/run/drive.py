"""Driving the batches: the Dask cluster, one quota per operation for the whole cluster, the window of
tasks in flight, and each batch's record accounted as it lands.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from batch.analyses.base import DriverHooks
from batch.aws.executor import Backlog, ClusterStart, dashboard_address, run_windowed, worker_threads
from batch.aws.ratelimit import install_quota
from batch.config.model import RunConfig
from batch.core.concurrency import ConcurrencyPlan, LatencyEstimate
from batch.core.errors import OutputUnreadable, OutputUnwritable
from batch.core.incremental import SettledState
from batch.core.manifest import BatchRecord
from batch.core.regions import RegionBalancer
from batch.core.selection import ListedObject
from batch.run.batch_task import OutputFailure, process_batch, record_failed_batch
from batch.run.commit import Attempt
from batch.run.context import BatchSpec, ImageToAnalyse, RunContext
from batch.run.plan import (
    Counted,
    batched,
    listed_in,
    operation_prices,
    plan_images,
    run_context,
    selected_objects,
)
from batch.run.progress import Progress, terminal_line
from batch.run.regions import limiter_quotas, region_plan
from batch.run.runtime import stop_new_batches
from batch.run.shutdown import Shutdown
from batch.run.summary import RunSummary, cpu_seconds

__all__ = ["run_batches"]

logger = logging.getLogger(__name__)


def run_batches(
    config: RunConfig,
    s3: Any,
    summary: RunSummary,
    attempt: Attempt,
    state: SettledState,
    *,
    hooks: Mapping[str, DriverHooks],
    shutdown: Shutdown | None = None,
    accounted: Callable[[], None] = lambda: None,
) -> None:
    """Plan from the listing and run the batches on Dask in a bounded window, accounting each record
    as it lands. A task that fails outright has its images retried one per task, so a poison image
    ends `failed` on its own; an error that says the run cannot succeed submits nothing more, and so
    does a `shutdown` request (`batch.run.shutdown`): the batches in flight may finish, and what fails
    meanwhile is never recorded. The LocalCluster starts once the plan has a first image to analyse,
    while the listing and the plan go on (`_plan_ahead`): a run with nothing to analyse starts none.
    `accounted` is called after each record is accounted (a segment may be due); a run it stops (a
    segment's commit failed) submits nothing more."""
    shutdown = shutdown or Shutdown()
    with ClusterStart(config.dask, warm=WORKER_WARM_UP) as cluster:
        context = dataclasses.replace(
            run_context(config, attempt.record), regions=region_plan(config, summary, s3)
        )
        counter = Counted(listed_in(selected_objects(config, s3), hooks.values()))
        planned = _planned(counter, attempt, state, context, limit=config.limit)
        ahead = _plan_ahead(planned, cluster, shutdown)
        if not cluster.started:  # nothing to analyse (or stopped before anything was): no cluster
            return
        client, threads, quotas, cpu_before = _prepare_cluster(cluster, config, summary)
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

        prices = operation_prices(config)
        indices = itertools.count(attempt.next_batch)
        backlog = Backlog(
            BatchSpec(context, next(indices), tuple(images), in_flight())
            for images in _announced(batched(itertools.chain(ahead, planned), batch_size), hooks)
        )
        window = config.dask.batches_in_flight or 2 * threads
        progress = Progress(
            client, context.run_key, quotas, counter, summary, log_every=config.progress_log_seconds
        )
        stopping = _stopping(client, context, lambda: shutdown.requested or summary.status == "aborted")
        results = run_windowed(
            client,
            process_batch,
            backlog,
            window=window,
            key=lambda spec: f"batch-{spec.file_name}",
            stop=stopping,
            cancel=shutdown.give_up,
        )
        for spec, result, error in progress.during(results):  # the display runs while the loop does
            quarantined = backlog.finished(spec)
            if isinstance(result, OutputFailure):  # the output refused a record or the batch's files
                _stop_unwritable(summary, backlog, result)
                continue
            if error is not None and shutdown.requested:
                continue  # maybe the shutdown's doing (workers killed with the driver): --resume redoes it
            if error is not None and not quarantined and summary.status == "running":
                # Which image took the task down is unknown: retry each alone, so only it fails.
                backlog.quarantine(BatchSpec(context, next(indices), (image,), 1) for image in spec.images)
                summary.split_batches += 1
                continue
            if error is None:
                record, fatal = result.record, result.fatal
                latency.update(result.latency_seconds, result.answered)
                summary.call_seconds.update(result.call_seconds)
            elif (record := _failed_batch(spec, error, summary, backlog, s3)) is None:
                continue
            else:
                fatal = None
            if record is not None:  # None: the task recorded nothing, --resume analyses its images
                _account(spec, record, attempt, summary, prices)
                if summary.status == "running":
                    accounted()
                    if summary.status != "running":
                        backlog.close()
            if fatal and summary.status != "aborted":
                summary.end("aborted", fatal)
                backlog.close()  # submit nothing more; let the batches in flight finish
        summary.worker_cpu_seconds = sum(client.run(cpu_seconds).values())
        summary.processing_cpu_seconds = cpu_seconds() + summary.worker_cpu_seconds - cpu_before


def _planned(
    listing: Iterable[ListedObject],
    attempt: Attempt,
    state: SettledState,
    context: RunContext,
    *,
    limit: int,
) -> Iterator[ImageToAnalyse]:
    """The images of the listing that need analyses (`plan_images`), less what the attempt kept."""
    planned = plan_images(
        listing,
        attempt.ledger,
        state,
        context.settings_digests,
        skip_keys=attempt.kept_keys,
        limit=limit,
    )
    placed = _resumed(planned, attempt.resumable)
    return _placed(placed, RegionBalancer(context.regions)) if context.regions else placed


#: The most images planned ahead while the LocalCluster starts: the listing stays streamed.
PLAN_AHEAD = 10_000
#: What each worker process of the LocalCluster does as it starts: import what the tasks run, and make
#: the clients they make once (`batch.run.runtime.warm_up`).
WORKER_WARM_UP = ("batch.run.batch_task", "batch.run.runtime:warm_up")


def _plan_ahead(
    planned: Iterator[ImageToAnalyse], cluster: ClusterStart, shutdown: Shutdown
) -> list[ImageToAnalyse]:
    """The images planned while the cluster starts: planning goes on until the first image to analyse,
    which starts the cluster, then until the cluster is up (at most `PLAN_AHEAD` images). None to
    analyse, or a stop requested before the first: no cluster is started."""
    ahead: list[ImageToAnalyse] = []
    for image in planned:
        if shutdown.requested and not cluster.started:
            break
        ahead.append(image)
        cluster.start()
        if cluster.ready() or len(ahead) >= PLAN_AHEAD:
            break
    return ahead


def _prepare_cluster(
    cluster: ClusterStart, config: RunConfig, summary: RunSummary
) -> tuple[Any, int, dict[str, float], float]:
    """Once the cluster is up, install the run's quotas on it; its client, its task slots, the quotas,
    and the CPU seconds the job's processes have spent so far (the processing CPU is counted from here)."""
    client = cluster.client()
    processes, threads = worker_threads(client)
    quotas = dict(summary.quotas)  # resolved by the job before the run (`batch.run.quotas`)
    install_quota(client, limiter_quotas(summary, summary.region), default=config.rekognition.tps)
    cpu_before = cpu_seconds() + sum(client.run(cpu_seconds).values())
    summary.dashboard = dashboard_address(client)
    logger.info("Dask: %d worker processes, %d threads; dashboard %s", processes, threads, summary.dashboard)
    if sys.stderr.isatty():
        print(terminal_line(f"Dask dashboard: {summary.dashboard}"), file=sys.stderr)
    return client, threads, quotas, cpu_before


def _account(
    spec: BatchSpec, record: BatchRecord, attempt: Attempt, summary: RunSummary, prices: Mapping[str, float]
) -> None:
    """A batch's record into the run's ledger, its next commit and its summary."""
    attempt.add(record)
    summary.add_batch(record, prices)
    logger.debug("batch %s: %d images, %d files", spec.file_name, len(record.images), len(record.files))


def _failed_batch(
    spec: BatchSpec, error: BaseException, summary: RunSummary, backlog: Backlog[BatchSpec], s3: Any
) -> BatchRecord | None:
    """The record of a task that failed on its own, its images `failed`; None when the run has stopped
    (it commits nothing: no rows to write) or when the output refuses the record."""
    if summary.status != "running":
        return None
    try:
        return record_failed_batch(spec, error, s3)
    except (OutputUnwritable, OutputUnreadable) as refused:
        _stop_unwritable(summary, backlog, refused)
        return None


def _stop_unwritable(summary: RunSummary, backlog: Backlog[BatchSpec], error: OutputFailure) -> None:
    """The output refused a write (disk full, read-only, S3 PUT failing) or a read of the run's own
    records: the run stops, exit 3, nothing committed; its complete batches and done images are kept
    for `--resume`. An earlier stop keeps its reason."""
    if summary.status == "running":
        summary.end("unwritable", str(error))
    backlog.close()


def _resumed(
    images: Iterable[ImageToAnalyse], resumable: Mapping[str, tuple[str, int]]
) -> Iterator[ImageToAnalyse]:
    """Each image, with the earlier attempt whose unfinished record of it has answers to take."""
    for image in images:
        found = resumable.get(image.obj.key)
        if found is not None and found[0] == image.obj.etag:
            yield dataclasses.replace(image, resumes=found[1])
        else:
            yield image


def _placed(images: Iterable[ImageToAnalyse], balancer: RegionBalancer) -> Iterator[ImageToAnalyse]:
    """Each image with the region of its stateless calls (`RegionBalancer`), except one a `--resume`
    takes answers for: it keeps its own region, the one the crashed attempt most likely used."""
    for image in images:
        if image.resumes:
            yield image
        else:
            obj = image.obj
            yield dataclasses.replace(image, region=balancer.place(obj.key, obj.etag, obj.size))


def _stopping(client: Any, context: RunContext, stopped: Callable[[], bool]) -> Callable[[], bool]:
    """`stopped`, and the first time it is true, every worker told to start none of the run's batches
    it holds (`batch.run.runtime.stop_new_batches`): they return at once, calling nothing."""
    told = False

    def stopping() -> bool:
        nonlocal told
        if not told and stopped():
            told = True
            try:
                client.run(stop_new_batches, context.run_key, wait=False)
            except Exception:  # the scheduler is gone: the tasks will not start anyway
                logger.debug("could not tell the workers to stop", exc_info=True)
        return told

    return stopping


def _announced(
    batches: Iterable[list[ImageToAnalyse]], hooks: Mapping[str, DriverHooks]
) -> Iterator[list[ImageToAnalyse]]:
    """Each batch, once every analysis's `before_batch` hook saw the keys that need it (a face
    collection deletes their stored faces first: never a duplicate)."""
    for batch in batches:
        for name, hook in hooks.items():
            hook.before_batch([image.obj.key for image in batch if name in image.analyses])
        yield batch
