"""The run's text for people: the summary (the progress line: tests/run/test_progress.py)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from batch.analyses.base import DriverReport
from batch.core.manifest import BatchRecord
from batch.faces.sync import StorageForecast, forecast_lines
from batch.run.summary import RunSummary
from batch.run.text import format_summary

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_summary_names_every_outcome_and_the_cost() -> None:
    summary = RunSummary(
        "r1", "s3://b/p/", "out", ("labels",), "d", "", NOW, ended_at=NOW, status="completed"
    )
    summary.images.update({"listed": 3, "analysed": 2, "skipped": 1})
    summary.add_planned("DetectLabels", 0, 0.002)
    summary.calls.update({("DetectLabels", "ok"): 2})
    summary.region = "eu-west-1"
    text = format_summary(summary)
    assert "run r1: completed" in text
    assert "  attempt 0; committed: yes; Rekognition in eu-west-1" in text.splitlines()
    assert "3 listed: 2 analysed, 0 rejected, 0 failed, 1 skipped" in text
    assert "DetectLabels: 2 ok" in text
    assert "$0.0020" in text


def test_a_resumed_summary_shows_what_the_crash_cost_apart() -> None:
    summary = RunSummary(
        "r1", "s3://b/p/", "out", ("labels",), "d", "", NOW, ended_at=NOW, status="completed", resumed=True
    )
    summary.images.update({"listed": 3, "analysed": 3})
    summary.kept_batches, summary.kept_images = 1, 2
    lost = {("DetectLabels", "in-flight"): 1}
    summary.add_lost({("DetectLabels", "ok"): 1, **lost}, 0, lost, {"DetectLabels": 0.001})
    summary.add_batch(BatchRecord(2, 0, (), (), {("DetectLabels", "ok"): 3}), {"DetectLabels": 0.001})
    lines = format_summary(summary).splitlines()
    assert lines[1] == "  attempt 0, resumed with 2 images kept (batches kept whole: 1); committed: yes"
    assert "  DetectLabels: 1 in-flight, 4 ok" in lines
    assert lines[lines.index("  DetectLabels: 1 in-flight, 4 ok") + 1 :][:2] == [
        "  retries: 0, throttled: 0; estimated cost of the image calls $0.0050",
        "  of which paid twice: 1 calls, $0.0010 (work a crash or a failed task threw away; "
        "1 of them in flight when their process died)",
    ]


def test_the_dry_run_prices_the_collection_apart_from_the_image_calls() -> None:
    summary = RunSummary("r1", "s3://b/p/", "", ("index_faces",), "d", "", NOW, status="dry-run")
    summary.images.update({"listed": 3, "to_analyse": 1, "unchanged": 2})
    forecast = StorageForecast(exists=True, faces_before=5, orphans=1, pruning=True, pruned=1)
    forecast.to_index(2, sent=True)
    calls = Counter({("DescribeCollection", "planned"): 2, ("ListFaces", "planned"): 1})
    report = DriverReport(
        storage_calls=calls + Counter({("DeleteFaces", "planned"): 3}),
        storage_cost_usd=0.06,
        fields={"storage_cost_usd_month": 0.00003},
        dry_run_called="DescribeCollection and ListFaces only",
    )
    report.forecast_lines = forecast_lines("people", forecast, report)
    summary.add_planned("IndexFaces", 1, 0.001)
    summary.add_driver(report)
    lines = format_summary(summary, dry_run=True).splitlines()
    assert lines[1:] == [
        "  would call IndexFaces at most 1 times",  # storage calls are not among the image calls
        "  estimated cost of the image calls at list price: at most $0.0010 (called DescribeCollection and "
        "ListFaces only)",
        "  collection people: 5 faces stored",
        "  would delete 4 faces: 1 orphans, 2 of 1 images to index again, 1 of keys no longer listed",
        "  storage calls: DescribeCollection 2, ListFaces 1, DeleteFaces at most 3: $0.0600 at list price, "
        "apart from the image calls",
        "  faces stored after: about 2 ($0.0000/month; 1 images to index at 1.0 faces each)",
    ]


def test_the_quota_line_is_one_figure_when_every_operation_shares_it_else_one_per_operation() -> None:
    summary = RunSummary(
        "r1", "s3://b/p/", "out", ("labels",), "d", "", NOW, ended_at=NOW, status="completed"
    )
    ops = ("DetectFaces", "DetectLabels", "DetectModerationLabels", "DetectText", "RecognizeCelebrities")
    summary.quotas = dict.fromkeys(ops, 50.0)
    summary.quota_sources = dict.fromkeys(ops, "flag")
    (line,) = [line for line in format_summary(summary).splitlines() if "quotas" in line]
    assert line == "  quotas, calls/s: 50 for each operation (flag)"
    summary.quotas["DetectFaces"], summary.quota_sources["DetectLabels"] = 20.0, "service-quotas"
    (line,) = [line for line in format_summary(summary).splitlines() if "quotas" in line]
    assert line.startswith("  quotas, calls/s: DetectFaces 20 (flag), DetectLabels 50 (service-quotas), ")
