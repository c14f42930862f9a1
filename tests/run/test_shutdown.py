"""The driver's side of a shutdown: real signals to this process, the grace period, the one line."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import pytest
from fakes import FakeClock

from batch.core.errors import Interrupted
from batch.run.shutdown import Shutdown
from batch.run.summary import RunSummary, resume_command


def deliver(signum: int) -> None:
    """Send `signum` to this process and let its Python handler run (at the next bytecode)."""
    os.kill(os.getpid(), signum)
    for _ in range(1000):
        pass


def test_outside_the_batches_a_signal_stops_at_once_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    shutdown = Shutdown()
    with shutdown.handling_signals(), pytest.raises(KeyboardInterrupt):
        deliver(signal.SIGTERM)
    assert shutdown.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_while_batches_are_in_flight_a_signal_is_noted_and_the_grace_period_runs() -> None:
    clock = FakeClock()
    shutdown = Shutdown(10.0, clock=clock)
    with shutdown.handling_signals(), shutdown.deferred():
        deliver(signal.SIGINT)  # no KeyboardInterrupt here
        assert (shutdown.requested, shutdown.signum, shutdown.give_up()) == (True, signal.SIGINT, False)
        clock.sleep(9.9)
        assert not shutdown.give_up()
        clock.sleep(0.1)
        assert shutdown.give_up()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_signal_stops_waiting_and_a_third_would_kill() -> None:
    shutdown = Shutdown(3600.0, clock=FakeClock())
    with shutdown.handling_signals(), shutdown.deferred():
        deliver(signal.SIGTERM)
        assert not shutdown.give_up()
        deliver(signal.SIGINT)
        assert shutdown.give_up()
        assert shutdown.signum == signal.SIGTERM  # the first one names the stop
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_no_signal_no_stop() -> None:
    shutdown = Shutdown(0.0)
    assert not shutdown.requested
    assert not shutdown.give_up()


@pytest.mark.parametrize(
    ("command_line", "expected"),
    [
        (
            "rekbatch run --config 'my conf.toml' --run-id nightly-1 --input s3://b/p/",
            "rekbatch run --config 'my conf.toml' --input s3://b/p/ --resume nightly-1",
        ),
        ("rekbatch run --run-id=nightly-1 --full", "rekbatch run --full --resume nightly-1"),
        ("rekbatch run --resume nightly-1 -v", "rekbatch run -v --resume nightly-1"),
        ("", "rekbatch run --resume nightly-1"),
    ],
)
def test_the_resume_command_keeps_every_flag_but_the_run_id(command_line: str, expected: str) -> None:
    assert resume_command(command_line, "nightly-1") == expected


def summary(attempt: int) -> RunSummary:
    started = datetime(2026, 12, 1, tzinfo=UTC)
    s = RunSummary(
        "nightly-1", "s3://b/p/", "out", ("labels",), "d", "rekbatch run --run-id nightly-1", started
    )
    s.attempt = attempt
    return s


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_exits_128_plus_the_signal_with_one_line(signum: int, code: int) -> None:
    s = summary(attempt=1)
    s.interrupt(signum)
    problem = s.problem()
    assert isinstance(problem, Interrupted)
    assert (s.status, s.exit_code, s.as_json()["exit_code"], s.committed) == (
        "interrupted",
        code,
        code,
        False,
    )
    name = signal.Signals(signum).name
    assert str(problem) == (
        f"run nightly-1 stopped by {name}, nothing committed; finish it with: rekbatch run --resume nightly-1"
    )


def test_before_an_attempt_was_claimed_there_is_nothing_to_resume() -> None:
    s = summary(attempt=0)
    s.interrupt(signal.SIGTERM)
    assert "nothing to resume" in str(s.problem())
    assert "--resume" not in str(s.problem())


def test_a_committed_run_stays_committed_when_a_signal_comes_after() -> None:
    s = summary(attempt=1)
    s.end("completed")
    s.interrupt(signal.SIGTERM)
    assert (s.status, s.exit_code, s.report_error) == ("completed", 0, "stopped by SIGTERM")
