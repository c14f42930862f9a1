"""Fault injection for the tests only: environment variables that make the job die at a chosen point.

Real deaths, not exceptions, so the tests see what a crash leaves behind. Nothing is injected unless a
variable is set; never set them in production. (Not `REKBATCH_*`: those are configuration keys.)

* `TEST_REKBATCH_KILL_WORKER_ON_KEY=<key>`: the worker process that reaches this image key exits at
  once (`os._exit`), every time: a poison image that kills the workers it touches.
* `TEST_REKBATCH_EXIT_BEFORE_COMMIT=1`: the driver exits (code `EXIT_BEFORE_COMMIT_CODE`) after every
  data file is written, just before it creates the manifest: a driver killed between writing and
  committing.
* `TEST_REKBATCH_COMMIT_BARRIER=<folder>`: before committing, the driver waits until two processes
  have arrived in the folder, so two attempts on one run id commit at the same moment.
* `TEST_REKBATCH_SNAPSHOT_PAUSE=<folder>`: after a commit, before its state snapshot (the process's
  first snapshot only), the driver touches a file in the folder and sleeps
  (`TEST_REKBATCH_SNAPSHOT_PAUSE_SECONDS`, default `BARRIER_TIMEOUT_SECONDS`): a snapshot that takes
  long, as one of ten million keys does, for a signal (or the run's next segments) to arrive during it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

KILL_WORKER_ON_KEY = "TEST_REKBATCH_KILL_WORKER_ON_KEY"
EXIT_BEFORE_COMMIT = "TEST_REKBATCH_EXIT_BEFORE_COMMIT"
COMMIT_BARRIER = "TEST_REKBATCH_COMMIT_BARRIER"
SNAPSHOT_PAUSE = "TEST_REKBATCH_SNAPSHOT_PAUSE"
SNAPSHOT_PAUSE_SECONDS = "TEST_REKBATCH_SNAPSHOT_PAUSE_SECONDS"
EXIT_BEFORE_COMMIT_CODE = 86
BARRIER_TIMEOUT_SECONDS = 120.0


def kill_worker_on_key(key: str) -> None:
    """In a worker, before analysing `key`."""
    if os.environ.get(KILL_WORKER_ON_KEY) == key:
        os._exit(1)


def exit_before_commit() -> None:
    """In the driver, with every file of the run written and the manifest not yet created."""
    if os.environ.get(EXIT_BEFORE_COMMIT):
        os._exit(EXIT_BEFORE_COMMIT_CODE)


def commit_barrier() -> None:
    """In the driver, just before creating the manifest."""
    folder = os.environ.get(COMMIT_BARRIER)
    if not folder:
        return
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_SECONDS
    while len(list(Path(folder).iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)


def snapshot_pause(stop: threading.Event | None = None) -> None:
    """In the driver, after a commit, before its state snapshot (in a background thread: until `stop`)."""
    folder = os.environ.get(SNAPSHOT_PAUSE)
    marker = Path(folder) / str(os.getpid()) if folder else None
    if marker is None or marker.exists():
        return
    marker.touch()
    seconds = float(os.environ.get(SNAPSHOT_PAUSE_SECONDS) or BARRIER_TIMEOUT_SECONDS)
    if stop is None:
        time.sleep(seconds)
    else:
        stop.wait(seconds)
