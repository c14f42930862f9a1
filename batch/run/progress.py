"""The run's progress while it runs: per-image events from the workers, one line on the driver.

Worker side (`progress_feed`): each worker process counts the attempts it makes and the images it
finishes, and sends what changed at most every `FLUSH_SECONDS` as one Dask event on the run's topic
(`Worker.log_event`: worker -> scheduler -> the subscribed client, over the comms Dask already holds),
never one message per call. Driver side (`Progress`): the events feed a sliding window of rates and the
images done in batches not recorded yet; about once a second one line on stderr when it is a terminal,
fitted to its width (`batch.core.progress_line`), else with `-v` a line logged at INFO every
`run.progress_log_seconds`, else nothing. The events drive only this display: the summary's counts
come from the batch records alone.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TextIO, TypeVar

from distributed import get_worker

from batch.core.calls import THROTTLE_CODES
from batch.core.progress_line import OperationRate, ProgressView, fit, progress_line
from batch.core.rates import WindowRates
from batch.run.summary import RunSummary

__all__ = [
    "FLUSH_SECONDS",
    "Progress",
    "ProgressFeed",
    "progress_feed",
    "progress_topic",
    "terminal_line",
]

logger = logging.getLogger(__name__)

#: Seconds between two events of one worker process (when something changed). An event costs about
#: 1 ms of the driver's CPU and 1 ms of the worker's, whatever it holds (docs/design/progress.md).
FLUSH_SECONDS = 1.0
#: Seconds of the window the rates are averaged over.
RATE_WINDOW = 10.0
#: Seconds between two redraws of the terminal line.
REDRAW_SECONDS = 1.0
#: Statuses an image ends with in a task (`unchanged` images are settled by the driver's plan).
_TASK_STATUSES = ("analysed", "rejected", "failed", "skipped", "changed")
#: The window's key of the images tasks finished: the pace of the ETA (unchanged images take no time).
_BY_TASKS = "images done by tasks"


def progress_topic(run_key: str) -> str:
    """The Dask event topic of one attempt of a run (`RunContext.run_key`)."""
    return f"rekbatch-progress/{run_key}"


class ProgressFeed:
    """A worker process's progress events: attempts by (operation, outcome) since the last event, and
    each running batch's images done so far by status (the whole count: a batch a worker's death made
    run twice replaces its count, it does not add to it). Thread-safe; `send(topic, message)` is called
    by `flush` outside the lock, with msgpack-able messages."""

    def __init__(self, send: Callable[[str, Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._calls: dict[str, Counter[tuple[str, str]]] = {}
        self._images: dict[str, dict[int, Counter[str]]] = {}
        self._changed: dict[str, set[int]] = {}

    def call(self, topic: str, operation: str, outcome: str) -> None:
        with self._lock:
            self._calls.setdefault(topic, Counter())[(operation, outcome)] += 1

    def image(self, topic: str, batch: int, status: str) -> None:
        with self._lock:
            self._images.setdefault(topic, {}).setdefault(batch, Counter())[status] += 1
            self._changed.setdefault(topic, set()).add(batch)

    def forget(self, topic: str, batch: int) -> None:
        """The batch's task ended: its record now counts its images."""
        with self._lock:
            self._images.get(topic, {}).pop(batch, None)
            self._changed.get(topic, set()).discard(batch)

    def flush(self) -> None:
        """Send one event per topic with what changed since the last one."""
        with self._lock:
            messages = {}
            for topic in self._calls.keys() | self._changed.keys():
                calls = self._calls.pop(topic, Counter())
                batches = self._images.get(topic, {})
                changed = sorted(b for b in self._changed.pop(topic, ()) if b in batches)
                if calls or changed:
                    messages[topic] = {
                        "calls": [[op, outcome, n] for (op, outcome), n in calls.items()],
                        "images": [[b, sorted(batches[b].items())] for b in changed],
                    }
        for topic, message in messages.items():
            self._send(topic, message)


@functools.cache
def progress_feed() -> ProgressFeed:
    """This worker process's feed, flushed by a daemon thread every `FLUSH_SECONDS`. Call it first
    in a task's own thread (it finds the Dask worker there); outside a worker it sends nothing."""
    try:
        worker = get_worker()
    except ValueError:  # not in a Dask worker (tests calling a task directly)
        return ProgressFeed(lambda topic, message: None)
    feed = ProgressFeed(worker.log_event)  # thread-safe: hands the message to the worker's event loop

    def flushing() -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                feed.flush()
            except Exception:  # the worker is closing: its progress no longer matters
                logger.debug("progress event not sent", exc_info=True)

    threading.Thread(target=flushing, name="rekbatch-progress", daemon=True).start()
    return feed


def terminal_width(stream: TextIO) -> int:
    """Columns of the terminal `stream` writes to (`COLUMNS` first, as `shutil` reads it)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


def terminal_line(text: str, stream: TextIO = sys.stderr) -> str:
    """`text` fitted to the width of the terminal `stream` writes to, one column spare (a line that
    fills the last column wraps on some terminals); whole when `stream` is not a terminal."""
    return fit(text, terminal_width(stream) - 1) if stream.isatty() else text


class _Listing(Protocol):
    total: int | None


class _Batch(Protocol):
    index: int


Item = TypeVar("Item", bound=tuple[Any, ...])


class Progress:
    """The driver's display of one attempt: subscribe to its topic, redraw about once a second.

    Use `during(results)` around the loop over the tasks' results (each a tuple whose first item has
    the batch `index`): the display runs while the loop does, and the images of each batch the loop
    has accounted are taken from `summary` from then on, no longer from the events."""

    def __init__(
        self,
        client: Any,
        run_key: str,
        quotas: Mapping[str, float],
        listing: _Listing,
        summary: RunSummary,
        *,
        log_every: float = 30.0,
        stream: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client, self._topic = client, progress_topic(run_key)
        self._quotas, self._listing, self._summary = quotas, listing, summary
        self._stream, self._clock = stream, clock
        self._terminal = stream.isatty()
        self._log_every = log_every if log_every > 0 and logger.isEnabledFor(logging.INFO) else 0.0
        self._started = clock()
        self._rates = WindowRates(RATE_WINDOW, self._started)
        self._lock = threading.Lock()
        self._live: dict[int, Counter[str]] = {}  # batch -> images done, until its record is accounted
        self._accounted: set[int] = set()
        self._operations: list[str] = list(quotas)
        self._throttled = 0
        self._seen_calls = False
        self._by_tasks = sum(summary.images[s] for s in _TASK_STATUSES)  # kept by a resume
        self._shown = False
        self._stop = threading.Event()
        self._handlers: list[logging.StreamHandler[Any]] = []  # those writing to `stream`, while shown
        self._formatters: list[logging.Formatter | None] = []

    @property
    def enabled(self) -> bool:
        return self._terminal or bool(self._log_every)

    def during(self, results: Iterator[Item]) -> Iterator[Item]:
        """`results`, with the display running until the loop over them ends, however it ends."""
        if not self.enabled:
            yield from results
            return
        self._start()
        try:
            for item in results:
                yield item
                self._account(item[0])
        finally:
            self._close()

    def on_event(self, event: tuple[float, Mapping[str, Any]]) -> None:
        """One worker's event (`ProgressFeed.flush`), as Dask hands it to the subscriber."""
        _, message = event
        now = self._clock()
        with self._lock:
            if not self._seen_calls and message.get("calls"):
                # The rates start with the first calls, not with the tasks' start: an event holds what
                # its worker did over the last FLUSH_SECONDS.
                self._seen_calls = True
                self._rates.started = now - FLUSH_SECONDS
            for operation, outcome, n in message.get("calls", ()):
                self._rates.add(now, operation, n)
                if operation not in self._operations:
                    self._operations.append(operation)
                if outcome in THROTTLE_CODES:
                    self._throttled += n
            for batch, counts in message.get("images", ()):
                if batch not in self._accounted:
                    self._live[batch] = Counter(dict(counts))

    def view(self, now: float) -> ProgressView:
        """What the line shows now: the summary's counts plus the events of batches not accounted."""
        with self._lock:
            images = Counter(_counts(self._summary.images))
            for counts in self._live.values():
                images.update(counts)
            done = min(sum(images[s] for s in (*_TASK_STATUSES, "unchanged")), images["listed"])
            by_tasks = sum(images[s] for s in _TASK_STATUSES)
            self._rates.add(now, _BY_TASKS, by_tasks - self._by_tasks)
            self._by_tasks = max(by_tasks, self._by_tasks)
            rates = tuple(
                OperationRate(op, self._rates.rate(op, now), self._quotas.get(op, 0.0))
                for op in self._operations
            )
            pace = self._rates.rate(_BY_TASKS, now)
            throttled = self._throttled
        total = self._listing.total
        eta = (total - done) / pace if total is not None and pace > 0 else None
        return ProgressView(
            done,
            images["listed"],
            total,
            images["rejected"],
            images["failed"],
            rates,
            throttled,
            eta,
            now - self._started,
        )

    def _account(self, batch: _Batch) -> None:
        with self._lock:
            self._accounted.add(batch.index)
            self._live.pop(batch.index, None)

    def _start(self) -> None:
        try:
            self._client.subscribe_topic(self._topic, self.on_event)
        except Exception:  # the display shows the records' counts alone; the run goes on
            logger.debug("could not subscribe to %s", self._topic, exc_info=True)
        if self._terminal:
            self._wrap_log_handlers()
        self._thread = threading.Thread(target=self._run, name="rekbatch-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        logged = self._started
        while not self._stop.wait(REDRAW_SECONDS):
            now = self._clock()
            if self._terminal:
                self.redraw()
            elif now - logged >= self._log_every:
                logged = now
                logger.info("progress: %s", progress_line(self.view(now), 1_000))

    def redraw(self, end: str = "") -> None:
        """Write the line now, over the one shown, fitted to the terminal's width at this moment."""
        line = progress_line(self.view(self._clock()), terminal_width(self._stream) - 1)
        with self._handlers_locked():
            self._stream.write(f"\r{line}\033[K{end}")
            self._stream.flush()
            self._shown = not end

    def _close(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._client.unsubscribe_topic(self._topic)
        except Exception:  # the scheduler is gone: no more events anyway
            logger.debug("could not unsubscribe from %s", self._topic, exc_info=True)
        if self._terminal:
            self.redraw(end="\n")  # the last state stays on screen
            self._unwrap_log_handlers()

    # A log record while the line is shown first clears it (the next redraw shows it again): the
    # handlers that write to the same stream get a formatter that does so, under the handler's lock,
    # which the redraw takes too.
    def _stream_handlers(self) -> list[logging.StreamHandler[Any]]:
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        return [
            handler
            for each in loggers
            if isinstance(each, logging.Logger)
            for handler in each.handlers
            if isinstance(handler, logging.StreamHandler) and handler.stream is self._stream
        ]

    def _wrap_log_handlers(self) -> None:
        self._handlers = self._stream_handlers()
        self._formatters = [handler.formatter for handler in self._handlers]
        for handler in self._handlers:
            handler.setFormatter(_Clearing(handler.formatter or logging.Formatter(), self))

    def _unwrap_log_handlers(self) -> None:
        for handler, formatter in zip(self._handlers, self._formatters, strict=True):
            handler.setFormatter(formatter)

    def _handlers_locked(self) -> Any:
        return _Locked([h.lock for h in self._handlers if h.lock is not None])

    def _cleared(self) -> str:
        shown, self._shown = self._shown, False
        return "\r\033[K" if shown else ""


class _Clearing(logging.Formatter):
    def __init__(self, inner: logging.Formatter, progress: Progress) -> None:
        super().__init__()
        self.inner, self._progress = inner, progress

    def format(self, record: logging.LogRecord) -> str:
        return self._progress._cleared() + self.inner.format(record)


class _Locked:
    def __init__(self, locks: list[threading.RLock]) -> None:
        self._locks = locks

    def __enter__(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()


def _counts(images: Mapping[str, int]) -> dict[str, int]:
    """A copy of the summary's counts, which the driver's main thread updates meanwhile."""
    while True:
        try:
            return dict(images)
        except RuntimeError:  # changed size during the copy: copy again
            continue
