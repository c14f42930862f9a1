"""batch.report.page and batch.report.data: a run's tables (real Parquet files in a folder) -> one HTML file.

The browser test (tests/test_report_browser.py) opens a real run's report; these check the parts:
reading one run among others, the summary against the `runs` row, escaping, the size limit, and
images that cannot be pictured.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import commit_rows
from hypothesis import given
from hypothesis import strategies as st

from batch.config.loader import load_report_config
from batch.config.model import ReportConfig
from batch.core.errors import ConfigError, OutputUnreadable, RunNotFound
from batch.report.data import load_run
from batch.report.page import (
    build_report,
    collect,
    report_path,
    sql_query,
    status_badge,
    summary_figures,
    take_within,
)
from batch.report.stats import ImageEntry
from batch.storage.commits import RunStore
from batch.storage.sink import Destination
from local_stack.samples import BOX, LINE, Spec, encode, render_upright

DT = "2026-11-25"
STARTED = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
GENERATED = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
FACE = ("face", 66, 88, "3:4")


class RunBuilder:
    """Rows of one run, written as the job writes them, and the pictures its images hold."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root, self.run_id = root, run_id
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.pictures: dict[str, bytes] = {}

    def add(self, table: str, **row: Any) -> None:
        common = {"run_id": self.run_id, "bucket": "photos-bucket", "etag": "e"}
        self.rows.setdefault(table, []).append({**common, **row})

    def image(
        self, key: str, *, orientation: int = 1, seed: int = 0, status: str = "analysed", **row: Any
    ) -> None:
        """A 480x320 JPEG with a face, a box and a text line, stored with `orientation`: its `images` row
        and, when analysed, its labels and boxes."""
        upright, objects = render_upright(Spec(key, (480, 320), (FACE, BOX, LINE), seed=seed))
        data = encode(upright, "JPEG", orientation)
        self.pictures[key] = data
        stored = (320, 480) if orientation >= 5 else (480, 320)
        values = {
            "key": key,
            "size_bytes": len(data),
            "last_modified": STARTED,
            "format": "JPEG",
            "stored_width": stored[0],
            "stored_height": stored[1],
            "exif_orientation": orientation,
            "width": 480,
            "height": 320,
            "status": status,
            "analyses": ["labels", "faces"],
            **row,
        }
        self.add("images", **values)
        if status != "analysed":
            return
        for index, obj in enumerate(objects):
            box = dict(zip(("box_left", "box_top", "box_width", "box_height"), obj.box, strict=True))
            if obj.kind == "face":
                self.add("faces", key=key, face_index=index, confidence=99.0, **box)
            elif obj.kind == "box":
                self.add("label_instances", key=key, name="Box", instance_index=0, confidence=90.0, **box)
            self.add(
                "labels",
                key=key,
                name={"face": "Person", "box": "Box", "text": "Text"}[obj.kind],
                confidence=90.0,
            )

    def zero_byte(self, key: str) -> None:
        """A zero-byte object: skipped, never sent, no picture."""
        values = {"size_bytes": 0, "status": "skipped", "status_reason": "EmptyObject", "analyses": []}
        self.add("images", key=key, last_modified=STARTED, **values)

    def write(self, schemas: dict[str, Any] | None = None, **columns: Any) -> None:
        """The batch's files, then the driver's: `call_seconds` and the `runs` row (with `columns`;
        `schemas` as an older job wrote some tables)."""
        listed = len(self.rows.get("images", []))
        analysed = sum(1 for r in self.rows.get("images", []) if r["status"] == "analysed")
        row = {
            "key": "in/",
            "started_at": STARTED,
            "ended_at": STARTED + timedelta(seconds=42.5),
            "input": "s3://photos-bucket/in/",
            "output": str(self.root),
            "analyses": ["labels", "faces"],
            "config_digest": "abc123",
            "command_line": "rekbatch run ...",
            "images_listed": listed,
            "images_analysed": analysed,
            "images_rejected": listed - analysed,
            "images_failed": 0,
            "images_skipped": 0,
            "calls": [
                {"operation": "DetectFaces", "outcome": "ThrottlingException", "count": 2},
                {"operation": "DetectFaces", "outcome": "ok", "count": analysed},
            ],
            "retries": 2,
            "throttled": 2,
            "estimated_cost_usd": 0.0123,
            "storage_cost_usd": 0.05,
            "status": "completed",
            **columns,
        }
        self.add(
            "call_seconds", second=1, operation="DetectFaces", outcome="ok", calls=analysed, quota_tps=5.0
        )
        rows = {**self.rows, "runs": [{"run_id": self.run_id, **row}]}
        commit_rows(RunStore(Destination(str(self.root))), self.run_id, rows, dt=DT, schemas=schemas)

    def read(self, entry: ImageEntry) -> bytes:
        return self.pictures[entry.key]


def report(run: RunBuilder, **settings: Any) -> str:
    tables = load_run(str(run.root), run.run_id)
    return build_report(tables, ReportConfig(**settings), run.read, generated_at=GENERATED)


def tile_keys(html: str) -> list[str]:
    return re.findall(r'<figure class="tile[^>]*data-key="([^"]*)"', html)


def figure_values(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([^"]+)" data-value="([^"]*)"', html))


# --- reading one run ----------------------------------------------------------------------------------------


def test_only_the_runs_own_rows_are_read(tmp_path: Path) -> None:
    """Another run whose id starts the same, in the same partition, is not mixed in."""
    mine, other = RunBuilder(tmp_path, "r1"), RunBuilder(tmp_path, "r1-000001")
    mine.image("in/a.jpg")
    for index in range(3):
        other.image(f"in/other-{index}.jpg")
    mine.write()
    other.write()
    tables = load_run(str(tmp_path), "r1")
    assert tables.run["images_listed"] == 1
    stats, gallery = collect(tables, thumbnails=24)
    assert gallery.analysed.total == 1
    assert stats.top("labels") == [("Person", 1), ("Box", 1), ("Text", 1)]


def test_a_missing_run_or_output_gets_a_one_line_reason(tmp_path: Path) -> None:
    RunBuilder(tmp_path, "r1").write()
    with pytest.raises(RunNotFound, match="no committed run r2 under"):
        load_run(str(tmp_path), "r2")
    with pytest.raises(OutputUnreadable, match="no such folder"):
        load_run(str(tmp_path / "nope"), "r1")
    with pytest.raises(ConfigError, match="run id"):
        load_run(str(tmp_path), "../r1")


# --- what the page says -------------------------------------------------------------------------------------


def test_the_summary_figures_are_the_runs_row(tmp_path: Path) -> None:
    run = RunBuilder(tmp_path, "r1")
    run.image("in/a.jpg")
    run.image("in/b.jpg", status="rejected", status_reason="InvalidImageFormatException")
    run.add(
        "errors",
        key="in/b.jpg",
        error_code="InvalidImageFormatException",
        operation="DetectFaces",
        message="bad",
        attempts=1,
    )
    run.write()
    html = report(run)
    row = load_run(str(tmp_path), "r1").run
    figures = figure_values(html)
    for name in ("images_listed", "images_analysed", "images_rejected", "retries", "throttled"):
        assert figures[name] == str(row[name]), name
    assert float(figures["estimated_cost_usd"]) == row["estimated_cost_usd"]
    assert float(figures["storage_cost_usd"]) == row["storage_cost_usd"] == 0.05  # priced apart
    assert float(figures["wall_seconds"]) == 42.5
    assert figures["calls"] == "3"
    assert [f.name for f in summary_figures(row)] == list(figures)
    assert re.search(r'data-code="InvalidImageFormatException">.*?<a href="#image-2">', html)
    assert html.count("<img") == 2 + 4  # two thumbnails; the calls, labels, faces, confidence charts


def test_keys_labels_and_messages_are_escaped(tmp_path: Path) -> None:
    run = RunBuilder(tmp_path, "r1")
    key = "in/<script>alert(1)</script>.jpg"
    run.image(key)
    run.add("labels", key=key, name="<img src=x onerror=alert(2)>", confidence=50.0)
    run.zero_byte("in/bad'.jpg")
    run.add("errors", key="in/bad'.jpg", error_code="EmptyObject", message="<b>zero</b> bytes", attempts=0)
    run.write()
    html = report(run)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>zero</b>" not in html
    assert "onerror=alert(2)" not in html  # only inside the chart's base64 SVG, as escaped text
    # The tile's SQL quotes the key as a string literal.
    assert sql_query("/out", "images", "r1", "in/bad'.jpg").endswith("AND key = 'in/bad''.jpg';")


def test_images_that_cannot_be_pictured_say_why_and_the_report_is_still_written(tmp_path: Path) -> None:
    run = RunBuilder(tmp_path, "r1")
    run.image("in/changed.jpg")
    run.zero_byte("in/zero.jpg")
    run.write()

    def read(entry: ImageEntry) -> bytes:
        # The image was replaced since the run: the read is pinned to the ETag the run saw.
        raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "etag"}}, "GetObject")

    html = build_report(load_run(str(tmp_path), "r1"), ReportConfig(), read, generated_at=GENERATED)
    assert tile_keys(html) == ["in/changed.jpg", "in/zero.jpg"]
    assert "no picture: reading it failed (PreconditionFailed)" in html
    assert "no picture: a zero-byte object" in html
    assert 'class="box box-' not in html  # no picture, no boxes


# --- the size limit -----------------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 50), max_size=20), st.integers(0, 300))
def test_take_within_is_the_longest_prefix_that_fits(sizes: list[int], budget: int) -> None:
    read: list[int] = []

    def items() -> Any:
        for size in sizes:
            read.append(size)
            yield size

    taken = take_within(items(), lambda size: size, budget)
    assert taken == sizes[: len(taken)]
    assert sum(taken) <= budget
    if len(taken) < len(sizes):
        assert sum(taken) + sizes[len(taken)] > budget
        assert len(read) == len(taken) + 1  # nothing after the first that does not fit is made


def test_the_gallery_is_cut_in_its_order_to_fit_max_bytes(tmp_path: Path) -> None:
    run = RunBuilder(tmp_path, "r1")
    for index in range(10):
        run.image(f"in/{index:02d}.jpg", orientation=index % 8 + 1, seed=index)
    run.write()
    full = report(run)
    without = report(run, thumbnails=0)
    assert len(tile_keys(full)) == 10
    assert tile_keys(without) == []
    limit = (len(full.encode()) + len(without.encode())) // 2
    cut = report(run, max_bytes=limit)
    assert len(cut.encode()) <= limit
    shown = tile_keys(cut)
    assert 0 < len(shown) < 10
    assert shown == tile_keys(full)[: len(shown)]  # the gallery's order is its priority
    assert f"{len(shown)} of 10 analysed images" in cut
    # Every orientation was shown first: the sample spreads over (format, orientation).
    assert sorted(re.findall(r'data-orientation="(\d)"', full)[:8]) == [str(o) for o in range(1, 9)]


# --- configuration and location -----------------------------------------------------------------------------


def test_report_settings_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text("[report]\nthumbnails = 4\nmax_bytes = 500_000\n[rekognition]\ntps = 9\n")
    settings = load_report_config(path, environ={"REKBATCH_REPORT__THUMBNAILS": "6"})
    assert (settings.thumbnails, settings.max_bytes, settings.enabled) == (6, 500_000, True)
    path.write_text("[report]\nmax_bytes = 10\n")
    with pytest.raises(ConfigError, match=r"report\.max_bytes"):
        load_report_config(path, environ={})
    assert report_path("r1") == "_reports/r1.html"


def badge(html: str) -> tuple[str, str]:
    found = re.search(r'<span class="status status-(\w+)" data-status="\w+">([^<]*)</span>', html)
    assert found is not None
    return found.group(2), found.group(1)


def test_the_badge_says_how_the_run_went_coloured_by_its_error_rate(tmp_path: Path) -> None:
    clean, some, all_failed = (RunBuilder(tmp_path, run_id) for run_id in ("r1", "r2", "r3"))
    clean.image("in/a.jpg")
    some.image("in/a.jpg")
    for index in range(2):
        some.image(f"in/bad-{index}.jpg", status="rejected", status_reason="InvalidImageFormatException")
    for index in range(3):
        all_failed.image(f"in/{index}.jpg", status="rejected", status_reason="InvalidImageFormatException")
    for run in (clean, some, all_failed):
        run.write()
    assert badge(report(clean)) == ("completed", "ok")
    assert badge(report(some)) == ("completed with 2 rejected", "bad")  # 2 of 3 sent
    assert badge(report(all_failed)) == ("completed with 3 rejected", "bad")
    assert status_badge(
        {"status": "completed", "images_analysed": 999, "images_rejected": 0, "images_failed": 1}
    ) == {
        "text": "completed with 1 failed",
        "level": "warn",
    }
    every_image_failed = {
        "status": "completed",
        "images_analysed": 0,
        "images_rejected": 0,
        "images_failed": 272,
    }
    assert status_badge(every_image_failed) == {"text": "completed with 272 failed", "level": "bad"}


# --- the region -------------------------------------------------------------------------------------------


def test_the_region_is_on_the_report_and_a_run_from_before_the_column_still_reads(tmp_path: Path) -> None:
    from batch.core.tables import RUNS_SCHEMA
    from batch.query import views

    new, old = RunBuilder(tmp_path, "new"), RunBuilder(tmp_path, "old")
    new.image("in/a.jpg")
    old.image("in/b.jpg")
    new.write(region="eu-west-1")
    before = RUNS_SCHEMA.remove(RUNS_SCHEMA.get_field_index("region"))
    old.write(schemas={"runs": before})
    assert "Rekognition in eu-west-1" in report(new)
    assert "Rekognition in" not in report(old)
    with views.connect(str(tmp_path)) as sql:
        rows = sql.execute("SELECT run_id, region FROM runs ORDER BY run_id").fetchall()
    assert rows == [("new", "eu-west-1"), ("old", None)]


# --- the quotas -------------------------------------------------------------------------------------------


def test_the_quotas_and_their_sources_are_on_the_report_and_older_runs_read_null(tmp_path: Path) -> None:
    from batch.core.tables import RUNS_SCHEMA
    from batch.query import views

    new, old = RunBuilder(tmp_path, "new"), RunBuilder(tmp_path, "old")
    new.image("in/a.jpg")
    old.image("in/b.jpg")
    quotas = [
        {"operation": "DetectFaces", "tps": 20.0, "source": "service-quotas"},
        {"operation": "DetectLabels", "tps": 2.5, "source": "config"},
    ]
    new.write(quotas=quotas)
    old.write(schemas={"runs": RUNS_SCHEMA.remove(RUNS_SCHEMA.get_field_index("quotas"))})
    assert (
        "quotas, calls/s</dt><dd data-quotas>DetectFaces 20 (service-quotas), DetectLabels 2.5 (config)"
        in report(new)
    )
    assert "data-quotas" not in report(old)
    with views.connect(str(tmp_path)) as sql:
        rows = sql.execute("SELECT run_id, quotas FROM runs ORDER BY run_id").fetchall()
    assert rows == [("new", quotas), ("old", None)]
