"""A worker process's runtime, shared by the tasks that run in it: image threads, clients, collector.

Built once per process on first use (`process_resources`, `image_threads`). Why each is so, with the
measurements: docs/design/worker-runtime.md.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import boto3
from distributed import get_worker

from batch.aws.logs import pin_aws_loggers
from batch.aws.ratelimit import ClusterRateLimiter
from batch.aws.rekognition import rekognition_client
from batch.aws.s3 import s3_client, s3_session
from batch.config.model import RekognitionConfig
from batch.core.retry import RetryBudget
from batch.core.silence import SilenceWatch

__all__ = [
    "COLLECTOR_THRESHOLDS",
    "ImageThreads",
    "image_threads",
    "new_batches_stopped",
    "process_resources",
    "regional_client",
    "silence_watch",
    "stop_new_batches",
    "task_slots",
    "warm_up",
]

T = TypeVar("T")


class ImageThreads:
    """The image threads of one worker process, shared by all the tasks that run in it.

    Each task queues its images here and waits for them; the threads move on to the next task's
    images, so calls in flight stay at the plan across batch boundaries. Threads are added as the plan
    grows and never removed (it is bounded by `rekognition.max_calls_in_flight` per task slot). Work is
    served first in, first out.
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
def image_threads() -> ImageThreads:
    return ImageThreads()


def task_slots() -> int:
    """Tasks this worker process runs at once (its Dask threads); 1 outside a Dask worker."""
    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not in a Dask worker
        return 1


@functools.lru_cache(maxsize=8)
def silence_watch(run_key: str, limit: float) -> SilenceWatch:
    """The silence of this process's calls in one attempt of a run (`run_key`), shared by its tasks: a
    remote cluster's worker processes outlive runs, and one run's dead endpoint must not end the next."""
    return SilenceWatch(limit)


#: Attempts of runs (`run_key`) whose batches must not start in this process: the run is stopping.
_STOPPED_RUNS: set[str] = set()


async def stop_new_batches(run_key: str) -> None:
    """Run by the driver on every worker (`Client.run`, not waiting: a coroutine, on the worker's event
    loop) when the run stops (a signal, an abort): the tasks of `run_key` that have not started here
    return at once, calling and recording nothing."""
    _STOPPED_RUNS.add(run_key)


def new_batches_stopped(run_key: str) -> bool:
    return run_key in _STOPPED_RUNS


#: `gc.set_threshold` in a worker process (see `tune_collector`).
COLLECTOR_THRESHOLDS = (20_000, 50, 100)


def tune_collector() -> None:
    """Exclude every object alive now (the modules, botocore's models) from the collector's scans
    (`gc.freeze`), and collect the young generations less often: full collections over the start-up
    heap paused a worker for long enough, holding the GIL, that calls went out in bursts and were
    throttled. A frozen object is still freed when its last reference goes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


@functools.cache
def process_resources(
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
    with _MAKING_CLIENTS:
        rekognition, s3 = _sessions()
        clients = rekognition_client(config, pool, rekognition), s3_client(pool, s3)
    resources = *clients, ClusterRateLimiter.for_worker(), budget
    tune_collector()
    return resources


@functools.cache
def regional_client(config: RekognitionConfig, region: str, threads: int) -> Any:
    """This process's Rekognition client for another `region` of the run (`rekognition.regions`),
    made once, from the same session as the run's own client."""
    with _MAKING_CLIENTS:
        rekognition, _ = _sessions()
        return rekognition_client(dataclasses.replace(config, region=region), max(10, threads), rekognition)


#: Held while this process's sessions are made, and while a client is made from them: a boto3 session
#: makes one client at a time.
_MAKING_CLIENTS = threading.Lock()


@functools.cache
def _sessions() -> tuple[Any, Any]:
    """This process's boto3 sessions for its Rekognition and S3 clients: a session reads the service
    models once, for every client made from it."""
    return boto3.session.Session(), s3_session()


def warm_up() -> None:
    """Make a Rekognition and an S3 client from this process's sessions, and drop them: its first task
    then makes its own without reading the service models. Run in a thread as a LocalCluster's worker
    process starts (`batch.aws.executor.dask_setup`); nothing is sent."""
    pin_aws_loggers()
    with _MAKING_CLIENTS:
        rekognition, s3 = _sessions()
        rekognition.client("rekognition", region_name=rekognition.region_name or "us-east-1")
        s3_client(session=s3)
