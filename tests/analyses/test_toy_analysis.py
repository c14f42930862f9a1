"""The registry is true: an analysis defined here, in the test, runs end to end through the CLI.

It is registered the way another distribution would register one: an entry point in the group
`rekognition_batch.analyses`, from a `.dist-info` folder on the job's PYTHONPATH, so the driver and
every Dask worker process find it. No module of the job is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from batch.analyses.base import Analysis
from batch.core.geometry import BoxPlacement
from batch.core.tables import table_schema
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "toy-input", "photos/"


@dataclass(frozen=True)
class TopLabelSettings:
    """`[analyses.top_label]`: the least confidence of the label kept."""

    min_confidence: float = 50.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str) -> TopLabelSettings:
        return cls(**mapping)


def top_label_request(image: Mapping[str, Any], settings: TopLabelSettings) -> dict[str, Any]:
    return {"Image": dict(image), "MaxLabels": 1, "MinConfidence": settings.min_confidence}


def top_label_rows(response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list[dict[str, Any]]]:
    labels = response.get("Labels") or []
    return {"top_labels": [{"label": label["Name"], "confidence": label["Confidence"]} for label in labels]}


TOP_LABELS = table_schema([pa.field("label", pa.string()), pa.field("confidence", pa.float64())])

TOY = Analysis(
    name="top_label",
    operation="DetectLabels",
    client_method="detect_labels",
    settings_type=TopLabelSettings,
    tables={"top_labels": TOP_LABELS},
    build_request=top_label_request,
    flatten=top_label_rows,
    orientation_field="OrientationCorrection",
    price=0.25,
)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PYTHONPATH holding this test module and the entry point that registers `TOY`."""
    site = tmp_path_factory.mktemp("site")
    info = site / "toy_analysis-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-analysis\nVersion: 1.0\n")
    entry_point = f"top_label = {Path(__file__).stem}:TOY"
    (info / "entry_points.txt").write_text(f"[rekognition_batch.analyses]\n{entry_point}\n")
    return os.pathsep.join([str(site), str(Path(__file__).parent)])


def rekbatch(stack: LocalStack, plugin_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env, "PYTHONPATH": plugin_path}
    command = [sys.executable, "-m", "batch", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_toy_analysis_registered_from_outside_runs_end_to_end(
    stack: LocalStack, plugin_path: str, tmp_path: Path
) -> None:
    from conftest import make_image  # not at the top: the job's processes import this module

    s3 = stack.s3_client()
    s3.create_bucket(Bucket=BUCKET)
    for name, kinds in (("cat.png", ("box",)), ("dog.png", ("box", "face")), ("fish.png", ("box", "text"))):
        rects = tuple((kind, (30 + 100 * i, 40, 80, 90)) for i, kind in enumerate(kinds))
        s3.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=make_image(rects=rects, fmt="PNG"))
    output, summary_path = tmp_path / "out", tmp_path / "summary.json"
    common = ["--config", str(ROOT / "configs" / "local.toml"), "--input", f"s3://{BUCKET}/{PREFIX}"]
    run = [*common, "--output", str(output), "--analyses", "top_label", "--summary-json", str(summary_path)]

    dry = rekbatch(stack, plugin_path, "run", *common, "--analyses", "top_label", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would call DetectLabels at most 3 times" in dry.stdout
    assert "$0.7500" in dry.stdout  # its own list price, 3 x $0.25

    before = len(stack.calls())
    first = rekbatch(stack, plugin_path, "run", *run)
    assert first.returncode == 0, first.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["images"] == {"listed": 3, "analysed": 3}
    assert summary["rows"]["top_labels"] == 3  # its own request: MaxLabels 1
    assert summary["estimated_cost_usd"] == pytest.approx(0.75)
    calls = stack.calls()[before:]
    assert sorted((c["operation"], c["name"]) for c in calls) == [
        ("DetectLabels", PREFIX + name) for name in ("cat.png", "dog.png", "fish.png")
    ]

    query = "SELECT count(DISTINCT key) || ' images with a top label' FROM top_labels; "
    query += "SELECT DISTINCT 'settled for ' || d.analysis FROM images, unnest(analyses_done) AS t(d)"
    read = rekbatch(stack, plugin_path, "sql", "--output", str(output), "-c", query)
    assert read.returncode == 0, read.stderr
    assert "3 images with a top label" in read.stdout
    assert "settled for top_label" in read.stdout

    again = rekbatch(stack, plugin_path, "run", *run)
    assert again.returncode == 0, again.stderr
    assert json.loads(summary_path.read_text())["images"] == {"listed": 3, "unchanged": 3}
    assert len(stack.calls()) == before + 3  # the incremental run settled them: no call

