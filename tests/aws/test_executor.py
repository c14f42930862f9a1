"""batch.aws.executor.Backlog: the order in which work is submitted, and the one-at-a-time quarantine."""

from __future__ import annotations

from batch.aws.executor import Backlog


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
