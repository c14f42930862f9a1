"""Stopping a run on SIGINT or SIGTERM: shutdown is not failure.

Ctrl-C sends SIGINT; cron's kill, systemd, Kubernetes, Docker and Airflow send SIGTERM. Either one asks
the run to stop. While batches are in flight (`deferred`), the first signal is only noted: the driver
submits nothing more, the batches in flight get `dask.shutdown_grace_seconds` to finish (their records
are real: `--resume` keeps them), and the rest are cancelled. A second signal cancels them at once; a
third kills the process (the default action). Outside `deferred`, where nothing is in flight, a signal
raises KeyboardInterrupt at once. The run then ends `interrupted`, commits nothing, and exits 130
(SIGINT) or 143 (SIGTERM). The LocalCluster's workers ignore both signals (`batch.aws.executor`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["SIGNALS", "Shutdown"]

#: The signals that stop a run.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown:
    """A run's stop request: which signal asked, when, and whether to wait no longer."""

    def __init__(self, grace_seconds: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self._clock = clock
        self._since = 0.0
        self._hurry = False
        self._deferring = 0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def give_up(self) -> bool:
        """Stop waiting for the batches in flight: a second signal came, or the grace period is over."""
        if self.signum is None:
            return False
        return self._hurry or self._clock() - self._since >= self.grace_seconds

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """While batches may be in flight: a signal only sets `requested`, the code in the block
        checks it and stops in order."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    @contextmanager
    def handling_signals(self) -> Iterator[Shutdown]:
        """Handle SIGINT and SIGTERM in the block (the main thread only: elsewhere Python cannot),
        then put the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum in SIGNALS:
            signal.signal(signum, self.notice)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def notice(self, signum: int, frame: FrameType | None = None) -> None:
        """The signal handler."""
        if self.signum is None:
            self.signum, self._since = signum, self._clock()
        else:
            self._hurry = True
            for other in SIGNALS:  # the next one kills at once
                signal.signal(other, signal.SIG_DFL)
        if not self._deferring:
            raise KeyboardInterrupt
