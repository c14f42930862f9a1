"""batch.aws.executor: the order in which work is submitted (Backlog), and the job's worker processes."""

from __future__ import annotations

import logging
import signal

import pytest

from batch.aws.executor import HEARTBEAT_TO_A_GONE_SCHEDULER, Backlog, dask_client
from batch.config.model import DaskConfig


def test_quarantined_specs_go_first_one_at_a_time_and_hold_the_stream_back() -> None:
    backlog = Backlog(iter(["b1", "b2", "b3"]))
    assert next(backlog, None) == "b1"
    backlog.quarantine(["s1", "s2"])  # b1 failed: its images, one per spec
    assert next(backlog, None) == "s1"
    assert next(backlog, None) is None  # s1 runs alone
    assert backlog.finished("b2") is False
    assert next(backlog, None) is None
    assert backlog.finished("s1") is True
    assert next(backlog, None) == "s2"
    assert backlog.finished("s2") is True
    assert [next(backlog, None), next(backlog, None), next(backlog, None)] == ["b2", "b3", None]


def test_a_closed_backlog_yields_nothing_more() -> None:
    backlog = Backlog(iter(["b1", "b2"]))
    backlog.quarantine(["s1"])
    backlog.close()
    assert next(backlog, None) is None


def _what_the_worker_does() -> dict[str, object]:
    """In a worker process: its signal handlers, and which of two ERROR records its logger lets through."""
    worker_log = logging.getLogger("distributed.worker")

    def shown(message: str) -> bool:
        record = worker_log.makeRecord(worker_log.name, logging.ERROR, "", 0, message, (), None)
        return bool(worker_log.filter(record))

    return {
        "signals": [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)],
        "heartbeat": shown(HEARTBEAT_TO_A_GONE_SCHEDULER + "."),
        "other": shown("Compute Failed"),
    }


@pytest.mark.integration
def test_the_job_s_workers_leave_signals_to_the_driver_and_keep_a_closing_scheduler_quiet() -> None:
    """A stopped run's stderr once held a worker's heartbeat traceback (the scheduler, in the driver,
    closing first under load); every other worker error is still shown."""
    with dask_client(DaskConfig(n_workers=1, threads_per_worker=1)) as client:
        (seen,) = client.run(_what_the_worker_does).values()
    assert seen == {"signals": [signal.SIG_IGN, signal.SIG_IGN], "heartbeat": False, "other": True}
