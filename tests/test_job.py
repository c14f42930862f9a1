"""The driver's pure parts: the progress line and the summary."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from batch.job import Progress, RunSummary, format_summary

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_progress_line_shows_rates_against_quota_and_eta() -> None:
    summary = RunSummary("r", "s3://b/p/", "out", ("labels",), "d", "", NOW)
    summary.images.update({"listed": 40, "analysed": 38, "rejected": 2})
    summary.calls.update({("DetectLabels", "ok"): 100, ("DetectLabels", "ThrottlingException"): 3})
    summary.throttled = 3
    progress = Progress({"DetectLabels": 50}, stream=io.StringIO())
    progress.listed_total = 80
    line = progress.line(summary, elapsed=2.0)
    assert line == "40 images, calls/s Labels 50/50, 3 throttled, 2 errors, ETA 2 s"


def test_summary_names_every_outcome_and_the_cost() -> None:
    summary = RunSummary(
        "r1", "s3://b/p/", "out", ("labels",), "d", "", NOW, ended_at=NOW, status="completed"
    )
    summary.images.update({"listed": 3, "analysed": 2, "skipped": 1})
    summary.calls.update({("DetectLabels", "ok"): 2})
    summary.estimated_cost_usd = 0.002
    text = format_summary(summary)
    assert "run r1: completed" in text
    assert "3 listed: 2 analysed, 0 rejected, 0 failed, 1 skipped" in text
    assert "DetectLabels: 2 ok" in text
    assert "$0.0020" in text
