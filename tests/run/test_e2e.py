"""The batch job end to end: the CLI as a subprocess on the local stack, the tables read with DuckDB.

Real components over loopback: moto's S3 server, our Rekognition endpoint, a Dask LocalCluster with
worker processes. Everything asserted comes from the sample set's ground truth, which is computed
independently of the endpoint's detection code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch.core.geometry import Box, upright_to_stored_box
from batch.core.selection import IMAGE_SUFFIXES
from batch.query import views
from local_stack.samples import GroundTruth, SampleTruth
from local_stack.stack import LocalStack, seed_samples
from local_stack.vision import content_digest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "e2e-input"
PREFIX = "photos/"
OUTPUT_BUCKET = "e2e-output"
ANALYSES = ("labels", "faces", "text", "moderation", "celebrities")
PX_TOLERANCE = 2
RATIO_TOLERANCE = 0.01


def run_cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"), *args]
    return subprocess.run(
        command, env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def truth(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=OUTPUT_BUCKET)
    return seed_samples(s3, BUCKET, PREFIX, tmp_path_factory.mktemp("samples"), oversized=True)


def selected(truth: GroundTruth) -> list[SampleTruth]:
    """The samples the job must pick up: under the prefix, with an image name."""
    return [s for s in truth.in_prefix() if s.key.lower().endswith(IMAGE_SUFFIXES)]


class Run:
    """One finished run: its summary, the calls it made, and SQL over its tables."""

    def __init__(
        self,
        result: subprocess.CompletedProcess[str],
        summary: dict[str, Any],
        calls: list[dict[str, Any]],
        sql: duckdb.DuckDBPyConnection,
    ) -> None:
        self.result, self.summary, self.calls, self.sql = result, summary, calls, sql

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        return self.sql.execute(query).fetchall()

    def dicts(self, table: str, where: str = "true") -> list[dict[str, Any]]:
        cursor = self.sql.execute(f"SELECT * FROM {table} WHERE {where}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def execute(
    stack: LocalStack, tmp: Path, output: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], list[dict[str, Any]]]:
    before = len(stack.calls())
    summary_path = tmp / "summary.json"
    result = run_cli(
        stack,
        "--input",
        f"s3://{BUCKET}/{PREFIX}",
        "--output",
        output,
        "--analyses",
        ",".join(ANALYSES),
        "--summary-json",
        str(summary_path),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(summary_path.read_text()), stack.calls()[before:]


@pytest.fixture(scope="module")
def local_run(stack: LocalStack, truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Images sent as S3 references, tables to a local folder."""
    tmp = tmp_path_factory.mktemp("local-run")
    out = tmp / "out"
    result, summary, calls = execute(stack, tmp, str(out))
    return Run(result, summary, calls, views.connect(str(out)))


@pytest.fixture(scope="module")
def s3_run(stack: LocalStack, truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Image bytes sent in the request, tables to S3; read back through pyarrow + DuckDB."""
    tmp = tmp_path_factory.mktemp("s3-run")
    output = f"s3://{OUTPUT_BUCKET}/tables"
    result, summary, calls = execute(stack, tmp, output, "--image-source", "bytes")
    # DuckDB's httpfs extension can't be installed offline: the helper loads the committed files itself.
    return Run(result, summary, calls, views.connect(output, stack.s3_client()))


@pytest.fixture(params=["local_run", "s3_run"])
def run(request: pytest.FixtureRequest) -> Run:
    return request.getfixturevalue(request.param)


# --- accounting --------------------------------------------------------------------------------------------


def test_one_images_row_per_selected_sample_with_upright_size(run: Run, truth: GroundTruth) -> None:
    rows = {r["key"]: r for r in run.dicts("images")}
    expected = selected(truth)
    assert sorted(rows) == sorted(s.key for s in expected)
    for sample in expected:
        row = rows[sample.key]
        assert (row["status"], row["status_reason"]) == (sample.job_status, sample.job_error), sample.key
        if sample.upright_width is not None:
            assert (row["width"], row["height"]) == (sample.upright_width, sample.upright_height), sample.key
            assert (row["stored_width"], row["stored_height"]) == (sample.stored_width, sample.stored_height)
            assert row["exif_orientation"] == sample.exif_orientation, sample.key


def test_one_error_row_per_bad_file_with_its_rekognition_code(run: Run, truth: GroundTruth) -> None:
    errors = Counter((r["key"], r["error_code"]) for r in run.dicts("errors"))
    expected = Counter((s.key, s.job_error) for s in selected(truth) if s.job_error)
    assert errors == expected
    for row in run.dicts("errors"):
        # Refused from the header: no call; else Rekognition's answer to the one call made.
        assert row["attempts"] == (0 if truth.by_key(row["key"]).refused_from_header else 1), row["key"]
        assert row["retryable"] is False


def test_each_image_says_how_it_was_sent(run: Run, truth: GroundTruth) -> None:
    bytes_mode = "--image-source" in run.result.args
    for row in run.dicts("images"):
        sample = truth.by_key(row["key"])
        if sample.refused_from_header:
            expected = None
        elif sample.converted:
            expected = "converted_jpeg"
        else:
            expected = "bytes" if bytes_mode else "s3_object"
        assert row["sent_as"] == expected, sample.key
        assert (row["sent_bytes"] is None) == (expected in (None, "s3_object")), sample.key
        if expected == "bytes":
            assert row["sent_bytes"] == sample.size_bytes
        converted_size = (sample.upright_width, sample.upright_height) if sample.converted else (None, None)
        assert (row["sent_width"], row["sent_height"]) == converted_size, sample.key


def test_no_call_twice_for_the_same_image_and_operation(run: Run, truth: GroundTruth) -> None:
    def image_of(call: dict[str, Any]) -> str:
        return call["name"] if call["source"] == "s3" else call["digest"]

    seen = Counter((c["operation"], image_of(c)) for c in run.calls)
    assert max(seen.values()) == 1
    # Every analysable image gets one call per analysis; one refused from its header none; another bad
    # one only the call that rejected it.
    good = [s for s in selected(truth) if s.job_status == "analysed"]
    bad = [s for s in selected(truth) if s.job_status != "analysed" and not s.refused_from_header]
    assert len(run.calls) == len(good) * len(ANALYSES) + len(bad)
    assert run.summary["images"]["analysed"] == len(good)


def test_bad_input_gets_its_row_and_what_the_header_condemns_is_never_sent(
    stack: LocalStack, run: Run, truth: GroundTruth
) -> None:
    """Issue 6, point 5: every kind of bad file ends with its row, and the run completes (exit 0)."""
    samples = {s.name: s for s in selected(truth)}
    every_kind = {
        "bad/truncated.jpg", "bad/zero.jpg", "bad/text.jpg",  # truncated, zero bytes, garbage
        "bad/tiny.jpg", "bad/wide.jpg", "bad/huge.jpg",  # under 80 px, over 10,000 px, over 15 MB
        "bad/bomb.png", "bad/bomb.gif",  # headers claiming 20000x20000 and 9999x9999 px
        "other/gif-inside.jpg", "other/webp-inside.jpg",  # formats Rekognition refuses, named .jpg
        "other/real.webp", "other/turned.tiff", "other/plain.bmp",  # ... and named as they are
        "multi/animated.gif", "multi/pages.tif", "multi/stereo.jpg",  # multi-frame: GIF, TIFF, MPO
    }  # fmt: skip
    assert every_kind <= set(samples)
    images = {r["key"]: r for r in run.dicts("images")}
    errors = {r["key"]: r for r in run.dicts("errors")}
    s3 = stack.s3_client()
    sent = {c["name"] for c in run.calls} | {c["digest"] for c in run.calls}
    for sample in samples.values():
        row = images[sample.key]
        assert (row["status"], row["status_reason"]) == (sample.job_status, sample.job_error), sample.name
        if not sample.refused_from_header:
            continue
        error = errors[sample.key]
        assert (error["error_code"], error["operation"], error["attempts"]) == (sample.job_error, None, 0)
        assert error["message"]
        # No call by name (S3Object) nor by content (Bytes): Rekognition never saw it.
        body = s3.get_object(Bucket=BUCKET, Key=sample.key)["Body"].read()
        assert not {sample.key, content_digest(body)} & sent, sample.name
    assert run.result.returncode == 0


def test_odd_photos_leave_no_python_warning_in_the_log(run: Run) -> None:
    """The samples hold photos whose Exif is cut short: their rows say so; stderr is for people."""
    assert "Warning" not in run.result.stderr


def test_objects_outside_the_prefix_are_untouched(stack: LocalStack, run: Run, truth: GroundTruth) -> None:
    outside = {s.key for s in truth.outside_prefix()}
    assert outside
    assert not outside & {c["name"] for c in run.calls}
    assert not outside & {r[0] for r in run.rows("SELECT key FROM images")}
    s3 = stack.s3_client()
    for sample in truth.outside_prefix():
        assert s3.head_object(Bucket=BUCKET, Key=sample.key)["ContentLength"] == sample.size_bytes


def test_the_runs_row_matches_the_summary(run: Run) -> None:
    (row,) = run.dicts("runs")
    assert row["run_id"] == run.summary["run_id"]
    assert row["status"] == "completed"
    assert row["images_analysed"] == run.summary["images"]["analysed"]
    assert row["images_listed"] == run.summary["images"]["listed"]
    assert run.summary["run_id"] in run.result.stdout
    assert ":" not in row["run_id"]


# --- boxes against the ground truth, in every orientation ---------------------------------------------------


def assert_boxes_match(
    rows: list[dict[str, Any]],
    expected: list[tuple[float, ...]],
    expected_px: list[tuple[int, ...]],
    what: str,
) -> None:
    assert len(rows) == len(expected), what
    got = sorted(rows, key=lambda r: (r["box_left_px"], r["box_top_px"]))
    want = sorted(zip(expected_px, expected, strict=True))
    for row, (px, ratio) in zip(got, want, strict=True):
        got_px = (row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"])
        assert all(abs(a - b) <= PX_TOLERANCE for a, b in zip(got_px, px, strict=True)), (what, got_px, px)
        got_ratio = (row["box_left"], row["box_top"], row["box_width"], row["box_height"])
        assert all(abs(a - b) <= RATIO_TOLERANCE for a, b in zip(got_ratio, ratio, strict=True)), (
            what,
            got_ratio,
        )


def analysed_samples(truth: GroundTruth) -> list[SampleTruth]:
    """Analysed, as stored or converted: their boxes must be where the ground truth says."""
    return [s for s in selected(truth) if s.job_status == "analysed"]


def test_every_face_text_and_instance_box_is_upright(run: Run, truth: GroundTruth) -> None:
    samples = analysed_samples(truth)
    assert {s.exif_orientation for s in samples} == set(range(1, 9))
    # Converted copies too (first frame, turned upright): their boxes are the original's, upright.
    assert {s.format for s in samples if s.converted} == {"WEBP", "GIF", "TIFF", "BMP"}
    for sample in samples:
        key = sample.key.replace("'", "''")
        checks = {
            "faces": (run.dicts("faces", f"key = '{key}'"), sample.faces),
            "celebrities": (run.dicts("celebrities", f"key = '{key}'"), sample.of_kind("celebrity")),
            "text lines": (run.dicts("text", f"key = '{key}' AND type = 'LINE'"), sample.of_kind("text")),
            "label instances": (
                run.dicts("label_instances", f"key = '{key}' AND name = 'Box'"),
                sample.of_kind("box"),
            ),
        }
        for what, (rows, objects) in checks.items():
            assert_boxes_match(
                rows, [o.box for o in objects], [o.box_px for o in objects], f"{sample.key} {what}"
            )
        words = [w for o in sample.of_kind("text") for w in o.words]
        assert_boxes_match(
            run.dicts("text", f"key = '{key}' AND type = 'WORD'"),
            [w.box for w in words],
            [w.box_px for w in words],
            f"{sample.key} words",
        )
        texts = sorted(
            r[0] for r in run.rows(f"SELECT detected_text FROM text WHERE key = '{key}' AND type = 'LINE'")
        )
        assert texts == sorted(sample.line_texts)


def test_boxes_in_the_stored_pixel_array(run: Run, truth: GroundTruth) -> None:
    """For tools that ignore Exif: the same face in the stored pixels, for every orientation."""
    for sample in analysed_samples(truth):
        if not sample.faces:
            continue
        key = sample.key.replace("'", "''")
        rows = run.dicts("faces", f"key = '{key}'")
        for obj in sample.faces:
            stored = upright_to_stored_box(Box(*obj.box), sample.exif_orientation)
            px = (
                stored.left * sample.stored_width,
                stored.top * sample.stored_height,
                stored.width * sample.stored_width,
                stored.height * sample.stored_height,
            )
            assert any(
                all(
                    abs(a - b) <= PX_TOLERANCE
                    for a, b in zip(
                        (
                            r["stored_box_left_px"],
                            r["stored_box_top_px"],
                            r["stored_box_width_px"],
                            r["stored_box_height_px"],
                        ),
                        px,
                        strict=True,
                    )
                )
                for r in rows
            ), (sample.key, px)


def test_both_image_sources_give_the_same_rows(local_run: Run, s3_run: Run) -> None:
    for table, columns in {
        "faces": "key, face_index, box_left_px, box_top_px, box_width_px, box_height_px",
        "labels": "key, name, confidence",
        "moderation": "key, name, parent_name",
        "celebrities": "key, name, box_left_px",
    }.items():
        query = f"SELECT {columns} FROM {table} ORDER BY ALL"
        assert local_run.rows(query) == s3_run.rows(query), table


# --- bad configs, unreachable input, dry run ----------------------------------------------------------------


def test_a_bad_config_exits_2_with_a_one_line_reason(stack: LocalStack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rekognition]\ntps = -5\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "batch",
            "run",
            "--config",
            str(bad),
            "--input",
            f"s3://{BUCKET}/{PREFIX}",
            "--output",
            str(tmp_path / "o"),
        ],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"rekbatch: error: rekognition.tps: must be > 0, got -5.0 (from config file {bad})"
    )


def test_a_missing_bucket_exits_3_with_a_one_line_reason(stack: LocalStack, tmp_path: Path) -> None:
    result = run_cli(stack, "--input", "s3://no-such-bucket/x/", "--output", str(tmp_path / "o"))
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "rekbatch: error: run.input: cannot list s3://no-such-bucket/x/: NoSuchBucket "
        "(no bucket of that name: check the name, or create it)"
    )
    assert not (tmp_path / "o").exists()


def test_dry_run_counts_and_prices_without_calling(
    stack: LocalStack, truth: GroundTruth, tmp_path: Path
) -> None:
    before = len(stack.calls())
    result = run_cli(
        stack,
        "--input",
        f"s3://{BUCKET}/{PREFIX}",
        "--dry-run",
        "--analyses",
        "labels,faces",
        "--summary-json",
        str(tmp_path / "s.json"),
    )
    assert result.returncode == 0, result.stderr
    assert len(stack.calls()) == before
    summary = json.loads((tmp_path / "s.json").read_text())
    to_analyse = len([s for s in selected(truth) if s.size_bytes])  # the dry run reads no header
    assert summary["images"]["to_analyse"] == to_analyse
    assert summary["estimated_cost_usd"] == pytest.approx(to_analyse * 2 * 0.001)
    assert "would call DetectLabels" in result.stdout
