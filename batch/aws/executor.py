"""The job's only door to Dask: connect to a cluster, and run tasks through a bounded window.

One task per batch of images, not per call: a task costs the scheduler far more than a call costs the
worker. Batches are submitted from the streamed listing as earlier ones finish (`wait`, first completed),
so the scheduler holds O(window) futures, never the whole prefix. A task whose worker dies is re-run
elsewhere; after `ALLOWED_FAILURES + 1` deaths under it, it fails with KilledWorker, and the driver
retries its images one per task in a quarantine (`Backlog`). See docs/design/worker-runtime.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from multiprocessing import resource_tracker
from typing import Any, TypeVar

import dask
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster, WorkerPlugin, wait

from batch.config.model import DaskConfig
from batch.core.errors import ConfigError

logger = logging.getLogger(__name__)

#: Worker deaths a task may survive on the job's LocalCluster before it fails with KilledWorker: one, not
#: Dask's three, so a poison image costs few worker restarts, and a task that merely shared a dying worker
#: is retried in quarantine, never lost. A remote scheduler keeps its own
#: `distributed.scheduler.allowed-failures`.
ALLOWED_FAILURES = 1

Spec = TypeVar("Spec")


class Backlog(Iterator[Spec]):
    """The specs to submit: the stream's, and a quarantine of specs to run one at a time.

    Use it as `run_windowed`'s specs when a failed task's work is to be retried in smaller pieces.
    `quarantine(specs)` queues specs that run one at a time and before anything from the stream: a
    task that kills its workers then shares them only with tasks already running, so what fails in
    quarantine failed on its own. Tell it of every finished spec (`finished`). It stops yielding
    (StopIteration) while a quarantined spec runs or after `close()`, and may yield again later.
    """

    def __init__(self, specs: Iterator[Spec]) -> None:
        self._specs = specs
        self._quarantine: deque[Spec] = deque()
        self._running: Spec | None = None  # the quarantined spec in flight
        self._closed = False

    def __next__(self) -> Spec:
        if self._closed or self._running is not None:
            raise StopIteration
        if self._quarantine:
            self._running = self._quarantine.popleft()
            return self._running
        return next(self._specs)

    def quarantine(self, specs: Iterable[Spec]) -> None:
        self._quarantine.extend(specs)

    def finished(self, spec: Spec) -> bool:
        """Record that `spec` ended; True if it was a quarantined one."""
        if spec is self._running:
            self._running = None
            return True
        return False

    def close(self) -> None:
        """Yield nothing more, quarantined or not."""
        self._closed = True
        self._quarantine.clear()


#: Dask's timers that run whatever the load, by their `periodic_callbacks` name: (config key, the job's
#: period), Dask's default in the comment. The job sets them on its LocalCluster's scheduler, nannies and
#: workers, and `LightWorkerHousekeeping` on every worker of a remote cluster. Each wake-up costs CPU, and
#: none needs its default pace here: the tick only measures how late the event loop runs, the memory
#: monitor guards Dask's spill thresholds (the job keeps no Dask data and bounds its own memory), and the
#: system monitor feeds the dashboard's charts. See docs/design/worker-runtime.md for the CPU saved.
#: What `distributed.worker` logs, with a traceback, when a heartbeat finds the scheduler gone.
HEARTBEAT_TO_A_GONE_SCHEDULER = "Failed to communicate with scheduler during heartbeat"

SLOWER_TIMERS = {
    "tick": ("distributed.admin.tick.interval", "200ms"),  # 20 ms
    "memory_monitor": ("distributed.worker.memory.monitor-interval", "500ms"),  # 100 ms
    "monitor": ("distributed.admin.system-monitor.interval", "2s"),  # 500 ms
}


def slower_timers_environment() -> dict[str, str]:
    """`SLOWER_TIMERS` as Dask's environment variables (`DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL`, ...),
    for a cluster the job does not start: the plugin reaches its workers, not its scheduler or nannies."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): period
        for key, period in SLOWER_TIMERS.values()
    }


class LightWorkerHousekeeping(WorkerPlugin):
    """Stops Dask's statistical profiler and slows its timers (`SLOWER_TIMERS`) on every worker of the
    run, present and joining (a remote cluster's workers too: their config is their owner's).

    The profiler samples every thread's stack (`sys._current_frames()`) every 10 ms. On Python 3.11
    that can deadlock the whole worker process when a garbage collection runs inside the call and a
    finalizer needs the interpreter's thread-list lock (python/cpython#106883, dask/distributed#8616).
    It also costs CPU in proportion to the threads, and ours are many. The dashboard's profile page
    stays empty.
    """

    name = "rekbatch-light-worker-housekeeping"

    def setup(self, worker: Any) -> None:
        for name in ("profile", "profile-cycle"):
            callback = worker.periodic_callbacks.get(name)
            if callback is not None:
                callback.stop()
        for name, (_, period) in SLOWER_TIMERS.items():
            timer = worker.periodic_callbacks.get(name)
            if timer is not None:  # tornado's PeriodicCallback reads callback_time (ms) at each run
                timer.callback_time = max(timer.callback_time, 1000 * parse_timedelta(period))


#: The signals the driver alone handles (`batch.run.shutdown`). A terminal's Ctrl-C goes to its whole
#: foreground process group, and SIGTERM from systemd or Airflow to every process of the unit or group:
#: a worker process that took them printed KeyboardInterrupt tracebacks and closed under its tasks. The
#: job's LocalCluster workers are born with them blocked (`_local_cluster`) and ignore them once started
#: (`dask_setup`); the driver stops them, and they still die with it (Dask's parent-death watch).
DRIVER_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


#: The environment variable that names what a LocalCluster's worker processes do as they start
#: (`dask_client`'s `warm`), set in their environment by their nannies.
WARM_VARIABLE = "REKBATCH_WARM_UP"


def dask_setup(worker: Any) -> None:
    """In each worker process of the job's LocalCluster, as it starts (this module is its Dask preload):
    ignore `DRIVER_SIGNALS`, whatever signal mask the process was born with, and warm it up
    (`WARM_VARIABLE`) in a thread of its own while the worker registers and the driver submits: the
    first task then finds its modules imported (or waits for that import to end)."""
    for signum in DRIVER_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    logging.getLogger("distributed.worker").addFilter(_no_heartbeat_to_a_closing_scheduler)
    steps = [step for step in os.environ.get(WARM_VARIABLE, "").split(",") if step]
    if steps:
        threading.Thread(target=_warm_up, args=(steps,), name="rekbatch-warm-up", daemon=True).start()


def _no_heartbeat_to_a_closing_scheduler(record: logging.LogRecord) -> bool:
    """Drop the worker's "Failed to communicate with scheduler during heartbeat" (ERROR, a traceback):
    the job's scheduler lives in the driver, so it only ever goes away as the run closes the cluster
    (seen once in a stopped run's stderr, under load). The driver reports what really failed."""
    return not record.getMessage().startswith(HEARTBEAT_TO_A_GONE_SCHEDULER)


def _warm_up(steps: Sequence[str]) -> None:
    """Import each `module`, and call each `module:function`, in order."""
    for step in steps:
        name, _, function = step.partition(":")
        try:
            module = importlib.import_module(name)
            if function:
                getattr(module, function)()
        except Exception:  # what a task needs and fails here fails again in the task, where it is reported
            logger.debug("warming up %s failed", step, exc_info=True)


def _local_cluster(**options: Any) -> LocalCluster:
    """A LocalCluster whose worker processes never take `DRIVER_SIGNALS`, from their first instruction.

    Its event-loop thread starts (and restarts) the worker processes; started with the signals blocked,
    it and the processes it spawns inherit the mask, as the standard library protects its resource
    tracker (bpo-33613). A Ctrl-C while the cluster starts stays pending for the driver alone.
    """
    resource_tracker.ensure_running()  # starting it unblocks the signals of the calling thread
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DRIVER_SIGNALS)
    try:
        return LocalCluster(**options, preload=[__name__])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def scheduler_address(config: DaskConfig) -> str:
    """The remote scheduler's address (`--scheduler`, else `DASK_SCHEDULER_ADDRESS`); "" for none."""
    return config.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS", "")


@contextmanager
def dask_client(config: DaskConfig, *, warm: Sequence[str] = ()) -> Iterator[Client]:
    """A client of the configured scheduler (`scheduler_address`), else of a LocalCluster with worker
    processes sized to the machine, which warm up as they start: `warm` names modules to import and
    functions to call (`module:function`), in order."""
    address = scheduler_address(config)
    if address:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"dask.scheduler: cannot connect to {address}: {exc}") from None
        with client:
            client.register_plugin(LightWorkerHousekeeping())
            yield client
        return
    n_workers = config.n_workers or os.cpu_count() or 1
    with (
        dask.config.set(
            {
                "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                **dict(SLOWER_TIMERS.values()),
            }
        ),
        _local_cluster(
            n_workers=n_workers,
            threads_per_worker=config.threads_per_worker,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
            env={WARM_VARIABLE: ",".join(warm)},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(LightWorkerHousekeeping())
        yield client


class ClusterStart:
    """The run's Dask client, started when the driver first has work for it (`start`).

    Used as a context manager. A LocalCluster starts in a thread of its own, which holds it (and its
    client) until the block ends: the driver lists and plans while the worker processes start, and a
    run with nothing to analyse never starts one. A remote scheduler is connected to on entering, in the
    calling thread, as `dask_client` does. Leaving waits for a start under way to end, then closes.
    """

    def __init__(self, config: DaskConfig, *, warm: Sequence[str] = ()) -> None:
        self._config, self._warm = config, warm
        self._stack = ExitStack()
        self._thread: threading.Thread | None = None
        self._up = threading.Event()
        self._closing = threading.Event()
        self._client: Client | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> ClusterStart:
        if scheduler_address(self._config):
            self._client = self._stack.enter_context(dask_client(self._config))
            self._up.set()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join()
        self._stack.close()
        if self._error is not None and self._client is not None and exc_info[0] is None:
            raise self._error  # closing the LocalCluster failed, as `dask_client` would have raised

    @property
    def started(self) -> bool:
        """Whether a cluster was started or connected to (or is starting)."""
        return self._client is not None or self._thread is not None

    def start(self) -> None:
        """Start the LocalCluster in the background, unless it was started (or is remote)."""
        if not self.started:
            self._thread = threading.Thread(target=self._hold, name="rekbatch-cluster", daemon=True)
            self._thread.start()

    def ready(self) -> bool:
        """Whether `client()` would return (or raise) at once."""
        return self._up.is_set()

    def client(self) -> Client:
        """The client, once the cluster is up (started now if it was not); raises what its start raised."""
        self.start()
        self._up.wait()
        if self._client is None:
            assert self._error is not None
            raise self._error
        return self._client

    def _hold(self) -> None:
        """The thread that starts the LocalCluster, and closes it once the block ends (a client's
        context must end in the thread it began in)."""
        try:
            with dask_client(self._config, warm=self._warm) as client:
                self._client = client
                self._up.set()
                self._closing.wait()
        except BaseException as exc:  # raised in the driver's thread, by `client()` or on leaving
            self._error = exc
        finally:
            self._up.set()


def dashboard_address(client: Client) -> str:
    """The Dask dashboard's address, or why there is none: a LocalCluster's scheduler runs in this process
    and serves its dashboard only when bokeh is installed (the `dashboard` extra)."""
    local = client.cluster is not None
    if local and importlib.util.find_spec("bokeh") is None:
        return "not served (pip install 'rekognition-batch[dashboard]')"
    return str(client.dashboard_link)


def worker_threads(client: Client) -> tuple[int, int]:
    """(worker processes, total threads) of the cluster now."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return len(workers), sum(w.get("nthreads", 1) for w in workers)


#: Seconds between two looks at `stop` and `cancel` while no task ends.
POLL_SECONDS = 0.25


def _never() -> bool:
    return False


def run_windowed(
    client: Client,
    task: Callable[[Spec], Any],
    specs: Iterator[Spec],
    *,
    window: int,
    key: Callable[[Spec], str],
    stop: Callable[[], bool] = _never,
    cancel: Callable[[], bool] = _never,
) -> Iterator[tuple[Spec, Any, BaseException | None]]:
    """Run `task` on every spec, at most `window` at a time; yield (spec, result, error) as each ends.

    `specs` is pulled lazily, whenever fewer than `window` tasks are running; it may hold more specs
    after it once ran dry (the caller adds retries while it consumes results). A task's exception
    (including Dask's KilledWorker for a task that took down its workers) is yielded, not raised, so
    the caller can retry or record its images and go on. Once `stop()` is true nothing more is
    submitted; once `cancel()` is true the tasks still running are cancelled and never yielded.
    """
    pending: dict[Any, Spec] = {}

    def fill() -> None:
        while not stop() and len(pending) < window and (spec := next(specs, None)) is not None:
            pending[client.submit(task, spec, key=key(spec), pure=False)] = spec

    fill()
    while pending:
        try:
            done = wait(list(pending), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            done = set()
        for future in done:
            spec = pending.pop(future)
            try:
                yield spec, future.result(), None
            except Exception as exc:
                logger.warning("task %s failed: %s", key(spec), exc)
                yield spec, None, exc
            finally:
                future.release()
        if pending and cancel():
            client.cancel(list(pending))
            return
        fill()
