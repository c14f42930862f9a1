"""The settled state's snapshot end to end: the CLI as a subprocess on the local stack, three runs over
a changing bucket (docs/design/state.md).

After each commit the run writes a snapshot under `_state/`; the next run plans from it and reads no
committed run's `images` files that it covers (they are deleted here: a run that read them would fail),
and plans what the whole history says: the new and changed objects, the ones that failed, and every
image again once the analysis's settings change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.core.manifest import Manifest
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "state-e2e-input"
PREFIX = "photos/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack() as local:
        seed_samples(local.s3_client(), BUCKET, PREFIX, tmp_path_factory.mktemp("samples"))
        yield local


def run(stack: LocalStack, tmp_path: Path, out: Path | str, settings: str = "") -> dict:
    """One run of the CLI (labels only, no report, `settings` added to the local config); its summary
    JSON, after checking it exited 0."""
    config = tmp_path / "config.toml"
    config.write_text(
        (ROOT / "configs" / "local.toml").read_text() + "\n[report]\nenabled = false\n" + settings
    )
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "batch", "run", "--config", str(config), "--input", f"s3://{BUCKET}/{PREFIX}",
               "--output", str(out), "--summary-json", str(summary), "--analyses", "labels"]  # fmt: skip
    job = subprocess.run(
        command, env={**os.environ, **stack.env}, text=True, capture_output=True, timeout=300
    )
    assert job.returncode == 0, job.stderr
    assert "snapshot not written" not in job.stderr
    return json.loads(summary.read_text())


def manifests(out: Path) -> list[Manifest]:
    return [Manifest.from_json(p.read_text()) for p in sorted((out / "_commits").glob("*.json"))]


def delete_images_files(out: Path) -> int:
    """Delete every committed `images` file (the snapshot stands for them); how many there were."""
    files = [out / e.path for m in manifests(out) for e in m.files_of("images")]
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


def test_runs_plan_from_the_snapshot_and_read_no_run_it_covers(stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(stack, tmp_path, out)
    assert len(list((out / "_state").glob("settled-*.parquet"))) == 1
    failed = first["images"].get("failed", 0)
    s3 = stack.s3_client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"])
    good = [k for k in keys if k.endswith(".jpg") and "/bad/" not in k]
    s3.copy_object(Bucket=BUCKET, Key=f"{PREFIX}zz-new.jpg", CopySource={"Bucket": BUCKET, "Key": good[0]})
    s3.put_object(Bucket=BUCKET, Key=good[1], Body=s3.get_object(Bucket=BUCKET, Key=good[0])["Body"].read())
    s3.delete_object(Bucket=BUCKET, Key=good[2])
    assert delete_images_files(out) > 0

    second = run(stack, tmp_path, out)  # new, changed, deleted; run 1 read from the snapshot only
    assert second["images"]["listed"] == first["images"]["listed"]
    assert second["images"]["analysed"] + second["images"].get("failed", 0) == 2 + failed
    assert second["images"]["unchanged"] == first["images"]["listed"] - 2 - failed
    assert len(list((out / "_state").glob("settled-*.parquet"))) == 2
    delete_images_files(out)

    third = run(stack, tmp_path, out, "[analyses.labels]\nmin_confidence = 77.0\n")  # settings changed
    images = third["images"]
    sent = images["analysed"] + images.get("failed", 0)
    assert sent == images["listed"] - images.get("rejected", 0) - images.get("skipped", 0)
    assert images.get("unchanged", 0) == 0


def test_an_s3_output_gets_its_snapshot_and_plans_from_it(stack: LocalStack, tmp_path: Path) -> None:
    """The same through S3: the snapshot is uploaded after the commit and downloaded at the next start,
    and the covered run's `images` objects are never read."""
    s3 = stack.s3_client()
    s3.create_bucket(Bucket="state-e2e-output")
    out = "s3://state-e2e-output/out"
    first = run(stack, tmp_path, out)
    found = s3.list_objects_v2(Bucket="state-e2e-output", Prefix="out/")["Contents"]
    assert [o["Key"] for o in found if o["Key"].startswith("out/_state/")] != []
    for o in found:
        if o["Key"].startswith("out/images/"):
            s3.delete_object(Bucket="state-e2e-output", Key=o["Key"])
    second = run(stack, tmp_path, out)
    assert second["images"]["unchanged"] == first["images"]["listed"] - first["images"].get("failed", 0)
