"""Two regions at once, end to end: the CLI as a subprocess on the local stack, whose one endpoint holds
each region (the one a request is signed for) to its own quota and answers Service Quotas per region.
The stateless calls split over the regions as the pure plan says (its shares are the quotas'), those in
the bucket's region as S3 references and the others as bytes; each image's region and mode are in its
`images` row; every collection operation stays in the run's region; nothing is throttled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import make_image

from batch.core.regions import RegionBalancer, RegionPlan
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET, PREFIX = "regions", "in/"
IMAGES = 24
HOME, OTHER = "us-east-1", "us-west-2"
#: Each region's quota, enforced by the endpoint and listed by its Service Quotas in that region.
QUOTAS = {HOME: 6.0, OTHER: 3.0}
STATELESS = ("DetectLabels", "DetectFaces")
CONFIG = """[dask]
n_workers = 1
threads_per_worker = 2
batch_size = 6

[rekognition]
calls_in_flight = 3
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    extra = ["--quota-per-region", f"{OTHER}={QUOTAS[OTHER]:g}"]
    with LocalStack(tps=QUOTAS[HOME], extra_args=extra) as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket=BUCKET)  # no LocationConstraint: us-east-1, the run's own region
        image = make_image(rects=(("face", (40, 40, 60, 80)),))
        for i in range(IMAGES):
            s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{i:03d}.jpg", Body=image)
        yield stack


@pytest.fixture(scope="module")
def run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("regions")
    config, summary, output = tmp / "run.toml", tmp / "summary.json", tmp / "out"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "batch", "run", "--config", str(config),
               "--analyses", "labels,faces,index_faces", "--collection", "regions-test",
               "--regions", f"{HOME},{OTHER}", "--input", f"s3://{BUCKET}/{PREFIX}",
               "--output", str(output), "--summary-json", str(summary)]  # fmt: skip
    env = {**os.environ, **stack.env, "AWS_DEFAULT_REGION": HOME}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    files = (output / "images").rglob("*.parquet")
    images = [row for path in files for row in pq.read_table(path).to_pylist()]
    return {
        **json.loads(summary.read_text()),
        "stdout": result.stdout,
        "rows": {row["key"]: row for row in images},
        "calls": stack.calls(None),
    }


def expected_regions(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each image's region as the pure plan places it, in listing order, at the two quotas' shares."""
    total = sum(QUOTAS.values())
    balancer = RegionBalancer(RegionPlan(HOME, tuple((r, q / total) for r, q in QUOTAS.items()), HOME))
    return {key: balancer.place(key, rows[key]["etag"], rows[key]["size_bytes"]) for key in sorted(rows)}


def test_each_regions_quota_is_read_from_its_own_service_quotas(run: dict[str, Any]) -> None:
    listed = [c["region"] for c in run["calls"] if c["service"] == "service-quotas"]
    assert sorted(listed) == [HOME, OTHER]
    operations = (*STATELESS, "IndexFaces")
    assert run["region_quotas"] == {region: dict.fromkeys(operations, q) for region, q in QUOTAS.items()}
    assert {q["operation"]: q["tps"] for q in run["quotas"]}["DetectLabels"] == sum(QUOTAS.values())
    assert f"calls/s: {HOME} 6, {OTHER} 3" in run["stdout"]


def test_stateless_calls_split_by_the_plan_bytes_across_regions(run: dict[str, Any]) -> None:
    rows = run["rows"]
    assert len(rows) == IMAGES
    assert {row["status"] for row in rows.values()} == {"analysed"}
    expected = expected_regions(rows)
    shares = Counter(expected.values())
    assert abs(shares[OTHER] - IMAGES / 3) <= 5, shares  # 2:1 quotas: 16 and 8 images, give or take
    for key, row in rows.items():
        assert row["sent_region"] == expected[key], key
        assert row["sent_as"] == ("s3_object" if expected[key] == HOME else "bytes"), key
    rekognition = [c for c in run["calls"] if c["service"] == "rekognition"]
    for operation in STATELESS:
        calls = [c for c in rekognition if c["operation"] == operation]
        assert Counter(c["region"] for c in calls) == shares, operation
        assert {(c["region"], c["source"]) for c in calls} == {(HOME, "s3"), (OTHER, "bytes")}
        # The home region's references name exactly the images the plan sent there.
        named = sorted(c["name"] for c in calls if c["region"] == HOME)
        assert named == sorted(key for key, region in expected.items() if region == HOME)


def test_collection_operations_stay_in_the_runs_region_and_nothing_is_throttled(
    run: dict[str, Any],
) -> None:
    rekognition = [c for c in run["calls"] if c["service"] == "rekognition"]
    collection = [c for c in rekognition if c["operation"] not in STATELESS]
    assert Counter(c["operation"] for c in collection)["IndexFaces"] == IMAGES
    assert {c["region"] for c in collection} == {HOME}
    # The only error: DescribeCollection of the collection the run then creates.
    errors = Counter((c["operation"], c["outcome"]) for c in rekognition if c["outcome"] != "ok")
    assert errors == {("DescribeCollection", "ResourceNotFoundException"): 1}
    assert run["throttled"] == 0


def test_unreadable_quotas_fall_back_to_each_regions_published_default(tmp_path: Path) -> None:
    """Service Quotas denied: each region gets AWS's default for it (50 in us-east-1, 5 in ap-south-1),
    one line each; a dry run shows the split it would use."""
    with LocalStack(extra_args=["--service-quotas", "deny"]) as stack:
        stack.s3_client().create_bucket(Bucket=BUCKET)
        stack.s3_client().put_object(Bucket=BUCKET, Key=f"{PREFIX}a.jpg", Body=make_image())
        summary = tmp_path / "summary.json"
        command = [sys.executable, "-m", "batch", "run", "--dry-run", "--analyses", "labels",
                   "--regions", f"{HOME},ap-south-1", "--input", f"s3://{BUCKET}/{PREFIX}",
                   "--summary-json", str(summary)]  # fmt: skip
        env = {**os.environ, **stack.env, "AWS_DEFAULT_REGION": HOME}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    ran = json.loads(summary.read_text())
    assert ran["region_quotas"] == {HOME: {"DetectLabels": 50.0}, "ap-south-1": {"DetectLabels": 5.0}}
    assert {q["operation"]: (q["tps"], q["source"]) for q in ran["quotas"]} == {
        "DetectLabels": (55.0, "default")
    }
    notes = [line for line in result.stderr.splitlines() if line.startswith("rekbatch: quotas:")]
    assert [note.split(" (AccessDenied")[0] for note in notes] == [
        f"rekbatch: quotas: Service Quotas not readable in {HOME}",
        "rekbatch: quotas: Service Quotas not readable in ap-south-1",
    ]
    assert "using the default 5 calls/s for DetectLabels" in notes[1]
