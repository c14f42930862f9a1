"""The run report in a real browser: the demo's job on the local stack, its report opened in Chromium.

One run of the CLI (moto's S3 server, our Rekognition endpoint, a LocalCluster with worker processes)
over a few of the samples: every Exif orientation, PNGs, a converted TIFF and bad files. The job writes
the report at its end; headless Chromium from the system's packages (`/usr/bin/chromium`, installed by
`.ci/run`) opens it through Playwright (no browser download). What a person would check: the page
loads with no error and no request, its figures are the `runs` row, the chart is there, and every box
sits on the upright thumbnail where the ground truth says, over the pixels of the object it boxes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from batch.core.timeline import outcome_class
from local_stack.samples import COLOURS, GroundTruth, SampleTruth
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "report-input", "photos/"
#: The samples the run analyses (globs relative to the prefix): few, but every orientation and kind.
INCLUDE = ["orientation/*", "png/*", "other/turned.tiff", "bad/text.jpg", "bad/truncated.jpg", "bad/zero.jpg"]
#: The flags that work in this sandbox (no background networking: its connections are refused here).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Box edges on the thumbnail, as a share of its width or height (the tables' own tolerance is 0.01).
BOX_TOLERANCE = 0.015
COLOUR_TOLERANCE = 90
#: Which drawn layer shows which kinds of the ground truth's rectangles.
LAYER_KINDS = {
    "face": ("face", "celebrity"),
    "celebrity": ("celebrity",),
    "text line": ("text",),
    "label": ("box",),
}


@dataclass
class FinishedRun:
    stack: LocalStack
    truth: GroundTruth
    output: Path
    summary: dict[str, Any]

    @property
    def report(self) -> Path:
        return Path(self.summary["report"])

    def table(self, name: str) -> list[dict[str, Any]]:
        cursor = duckdb.connect().execute(f"SELECT * FROM read_parquet('{self.output}/{name}/**/*.parquet')")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def selected(self) -> list[SampleTruth]:
        included = tuple(PREFIX + glob.removesuffix("*") for glob in INCLUDE)
        return [s for s in self.truth.in_prefix() if s.key.startswith(included)]


@dataclass
class OpenedPage:
    page: Page
    url: str
    console: list[tuple[str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedRun]:
    tmp = tmp_path_factory.mktemp("report-run")
    with LocalStack() as stack:
        truth = seed_samples(stack.s3_client(), BUCKET, PREFIX, tmp / "samples")
        output, summary = tmp / "out", tmp / "summary.json"
        command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml")]
        command += [
            "--input",
            f"s3://{BUCKET}/{PREFIX}",
            "--output",
            str(output),
            "--summary-json",
            str(summary),
        ]
        env = {**os.environ, **stack.env, "REKBATCH_INPUT__INCLUDE": json.dumps(INCLUDE)}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        finished = FinishedRun(stack, truth, output, json.loads(summary.read_text()))
        assert f"report: {finished.report}" in result.stdout
        yield finished


@pytest.fixture(scope="module")
def opened(run: FinishedRun) -> Iterator[OpenedPage]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        reason = "Chromium not found: `.ci/run` installs it (apt-get install chromium)"
        if os.environ.get("TEST_REKBATCH_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        opened = OpenedPage(page, run.report.as_uri())
        page.on("console", lambda message: opened.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: opened.console.append(("pageerror", str(error))))
        page.on("request", lambda request: opened.requests.append(request.url))
        page.goto(opened.url, wait_until="load")
        yield opened
        browser.close()


# --- the page -----------------------------------------------------------------------------------------------


def test_the_page_loads_offline_with_no_error_and_no_request(opened: OpenedPage) -> None:
    assert opened.requests[0] == opened.url
    assert [url for url in opened.requests if url != opened.url and not url.startswith("data:")] == []
    assert [(kind, text) for kind, text in opened.console if kind in ("error", "warning", "pageerror")] == []
    images = opened.page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert images
    assert all(complete and width > 0 for complete, width in images)


def test_the_summary_figures_are_the_runs_row(opened: OpenedPage, run: FinishedRun) -> None:
    (row,) = run.table("runs")
    shown = {
        name: (value, text)
        for name, value, text in opened.page.eval_on_selector_all(
            "[data-figure]", "els => els.map(e => [e.dataset.figure, e.dataset.value, e.textContent])"
        )
    }
    for name in (
        "images_listed",
        "images_analysed",
        "images_rejected",
        "images_failed",
        "images_skipped",
        "retries",
        "throttled",
    ):
        assert shown[name] == (str(row[name]), f"{row[name]:,}"), name
    assert float(shown["estimated_cost_usd"][0]) == pytest.approx(row["estimated_cost_usd"], abs=1e-12)
    assert shown["estimated_cost_usd"][1] == f"${row['estimated_cost_usd']:,.4f}"
    assert float(shown["wall_seconds"][0]) == (row["ended_at"] - row["started_at"]).total_seconds()
    assert int(shown["calls"][0]) == sum(c["count"] for c in row["calls"])
    calls = opened.page.eval_on_selector_all(
        "#calls-table tr[data-operation]",
        "rows => rows.map(r => [r.dataset.operation, r.dataset.outcome, r.cells[2].textContent])",
    )
    assert sorted(calls) == sorted([c["operation"], c["outcome"], f"{c['count']:,}"] for c in row["calls"])
    assert row["images_analysed"] == run.summary["images"]["analysed"] > 0
    assert row["images_rejected"] > 0  # the bad files are in the summary too


def test_the_calls_chart_shows_each_operation_of_the_run(opened: OpenedPage, run: FinishedRun) -> None:
    src, width = opened.page.eval_on_selector("img[data-chart=calls]", "i => [i.src, i.naturalWidth]")
    assert width > 0
    assert src.startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(src.split(",", 1)[1]).decode()
    (row,) = run.table("runs")
    for operation in {c["operation"] for c in row["calls"]}:
        assert f">{operation}<" in svg, operation
    charts = opened.page.eval_on_selector_all("img[data-chart]", "imgs => imgs.map(i => i.dataset.chart)")
    assert set(charts) == {"calls", "labels", "moderation", "celebrities", "faces_per_image", "confidence"}


def test_call_seconds_add_up_to_the_runs_calls(run: FinishedRun) -> None:
    (row,) = run.table("runs")
    expected: Counter[tuple[str, str]] = Counter()
    for entry in row["calls"]:
        expected[(entry["operation"], outcome_class(entry["outcome"]))] += entry["count"]
    seconds: Counter[tuple[str, str]] = Counter()
    for second in run.table("call_seconds"):
        seconds[(second["operation"], second["outcome"])] += second["calls"]
        assert 0 <= second["second"] <= (row["ended_at"] - row["started_at"]).total_seconds() + 1
    assert seconds == expected


# --- the gallery --------------------------------------------------------------------------------------------

#: Each tile as the browser lays it out: its boxes relative to the picture, and the picture as drawn.
TILES_JS = """
() => Array.from(document.querySelectorAll('figure.tile')).map(tile => {
  const out = {key: tile.dataset.key, format: tile.dataset.format, text: tile.textContent,
               orientation: Number(tile.dataset.orientation), picture: null,
               analysed: tile.classList.contains('status-analysed')};
  const img = tile.querySelector('.frame img');
  if (!img) return out;
  const frame = img.getBoundingClientRect();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.getContext('2d').drawImage(img, 0, 0);
  out.picture = canvas.toDataURL('image/png');
  out.boxes = Array.from(tile.querySelectorAll('.box')).map(box => {
    const r = box.getBoundingClientRect();
    return {layer: box.dataset.layer, caption: box.title,
            left: (r.left - frame.left) / frame.width, top: (r.top - frame.top) / frame.height,
            width: r.width / frame.width, height: r.height / frame.height};
  });
  return out;
})
"""


@pytest.fixture(scope="module")
def tiles(opened: OpenedPage) -> list[dict[str, Any]]:
    return list(opened.page.evaluate(TILES_JS))


def drawn_boxes(tile: dict[str, Any], layer: str) -> list[tuple[float, float, float, float]]:
    """The tile's boxes of `layer` as shares of the picture, sorted; of the labels, only the sample's
    "Box" rectangles have a ground truth."""
    return sorted(
        (b["left"], b["top"], b["width"], b["height"])
        for b in tile["boxes"]
        if b["layer"] == layer and (layer != "label" or b["caption"].startswith("Box"))
    )


def colour_at_centre(picture: Image.Image, box: tuple[float, float, float, float]) -> Any:
    left, top, width, height = box
    return picture.getpixel(
        (int((left + width / 2) * picture.width), int((top + height / 2) * picture.height))
    )


def test_boxes_on_the_upright_thumbnails_match_the_ground_truth(
    tiles: list[dict[str, Any]], run: FinishedRun
) -> None:
    pictured = [tile for tile in tiles if tile["analysed"] and tile["picture"]]
    assert {tile["orientation"] for tile in pictured if tile["format"] == "JPEG"} == set(range(1, 9))
    for tile in pictured:
        sample = run.truth.by_key(tile["key"])
        for layer, kinds in LAYER_KINDS.items():
            got, want = drawn_boxes(tile, layer), sorted(o.box for o in sample.of_kind(*kinds))
            assert len(got) == len(want), (tile["key"], layer)
            for edges, truth in zip(got, want, strict=True):
                misplaced = max(abs(a - b) for a, b in zip(edges, truth, strict=True))
                assert misplaced <= BOX_TOLERANCE, (tile["key"], layer, edges, truth)
        # The picture under the boxes is upright: at each object's centre, the object's colour.
        picture = Image.open(io.BytesIO(base64.b64decode(tile["picture"].split(",", 1)[1]))).convert("RGB")
        for obj in sample.objects:
            colour = colour_at_centre(picture, obj.box)
            off = sum(abs(a - b) for a, b in zip(colour, COLOURS[obj.kind], strict=True))
            assert off < COLOUR_TOLERANCE, (tile["key"], obj.kind, colour)


def test_every_image_with_an_error_has_a_tile_with_its_code(
    tiles: list[dict[str, Any]], run: FinishedRun
) -> None:
    not_analysed = {s.key: s for s in run.selected() if s.job_status != "analysed"}
    assert len(not_analysed) == 3
    shown = {tile["key"]: tile for tile in tiles if not tile["analysed"]}
    assert set(shown) == set(not_analysed)
    for key, tile in shown.items():
        assert not_analysed[key].job_error in tile["text"], key
        assert "SELECT * FROM read_parquet(" in tile["text"]  # the way from the picture to its rows
        assert re.search(r"run_id = '[^']+' AND key = '", tile["text"])
    assert {tile["key"] for tile in tiles if tile["analysed"]} == {
        s.key for s in run.selected() if s.job_status == "analysed"
    }


# --- `rekbatch report` --------------------------------------------------------------------------------------


def figures_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([^"]+)" data-value="([^"]*)"', html))


def test_rekbatch_report_reads_and_writes_s3_output(run: FinishedRun) -> None:
    """The same run's tables copied to S3: `rekbatch report` reads them there and puts the report
    beside them, with the same figures and gallery as the report the run wrote."""
    s3 = run.stack.s3_client()
    s3.create_bucket(Bucket="report-output")
    # The parquet files and the commit record (its paths are relative to the output root).
    for path in [*run.output.rglob("*.parquet"), *run.output.glob("_commits/*.json")]:
        s3.put_object(
            Bucket="report-output", Key=f"tables/{path.relative_to(run.output)}", Body=path.read_bytes()
        )
    run_id, env = run.summary["run_id"], {**os.environ, **run.stack.env}
    command = [sys.executable, "-m", "batch", "report", run_id, "--output", "s3://report-output/tables"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    location = f"s3://report-output/tables/_reports/{run_id}.html"
    assert (result.returncode, result.stdout.strip()) == (0, location), result.stderr
    again = (
        s3.get_object(Bucket="report-output", Key=f"tables/_reports/{run_id}.html")["Body"].read().decode()
    )
    first = run.report.read_text()
    assert figures_of(again) == figures_of(first)
    assert re.findall(r'data-key="([^"]*)"', again) == re.findall(r'data-key="([^"]*)"', first)
    assert again.count('class="box box-') == first.count('class="box box-') > 0


def test_rekbatch_report_of_an_unknown_run_exits_2_with_a_one_line_reason(run: FinishedRun) -> None:
    command = [sys.executable, "-m", "batch", "report", "no-such-run", "--output", str(run.output)]
    result = subprocess.run(
        command, env={**os.environ, **run.stack.env}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    reason = "(it did not commit, or wrote elsewhere)"
    expected = f"rekbatch: error: no committed run no-such-run under {run.output} {reason}"
    assert result.stderr.strip() == expected
