"""A moderation adapter with `--regions`: the adapter (a project version) exists in the run's region
only, so DetectModerationLabels naming it must stay there while the other stateless calls (labels)
still split over the regions. Before, every analysis that fans out went to the image's region, and the
adapter's calls went to a region that has no such project version (on AWS: every image failed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_image

from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET, PREFIX = "regions-adapter", "in/"
IMAGES = 12
HOME, OTHER = "us-east-1", "us-west-2"
ADAPTER = "arn:aws:rekognition:us-east-1:123456789012:project/moderation/version/strict.1/1767261600001"
CONFIG = f"""[dask]
n_workers = 1
threads_per_worker = 2
batch_size = 6

[rekognition]
calls_in_flight = 3

[analyses.moderation]
project_version = "{ADAPTER}"
"""


def test_an_adapter_s_calls_stay_in_the_run_s_region_and_labels_still_fan_out(tmp_path: Path) -> None:
    extra = ["--quota-per-region", f"{OTHER}=10", "--moderation-adapter", ADAPTER]
    with LocalStack(tps=10, extra_args=extra) as stack:
        s3 = stack.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        image = make_image(rects=(("face", (40, 40, 60, 80)),))
        for i in range(IMAGES):
            s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{i:03d}.jpg", Body=image)
        config, summary = tmp_path / "run.toml", tmp_path / "summary.json"
        config.write_text(CONFIG)
        command = [sys.executable, "-m", "batch", "run", "--config", str(config),
                   "--analyses", "labels,moderation", "--regions", f"{HOME},{OTHER}",
                   "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(tmp_path / "out"),
                   "--summary-json", str(summary)]  # fmt: skip
        env = {**os.environ, **stack.env, "AWS_DEFAULT_REGION": HOME, "REKBATCH_REPORT__ENABLED": "false"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        calls = [c for c in stack.calls() if c["outcome"] == "ok"]
    assert json.loads(summary.read_text())["images"]["analysed"] == IMAGES
    moderation = [c for c in calls if c["operation"] == "DetectModerationLabels"]
    assert len(moderation) == IMAGES
    assert {(c["region"], c["model"]) for c in moderation} == {(HOME, ADAPTER)}
    labels = Counter(c["region"] for c in calls if c["operation"] == "DetectLabels")
    assert set(labels) == {HOME, OTHER}, labels  # the stateless calls without a regional resource spread
