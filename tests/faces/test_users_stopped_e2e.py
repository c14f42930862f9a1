"""A users' sync that stops part-way still says what it called: `rekbatch run --analyses user_search`
with a folder whose second photo has no face stops before the batches (exit 2), after the first photo's
IndexFaces and its user's CreateUser went through. Those calls are billed: the summary and its JSON
must count and price them as the endpoint's call log has them, not say "no call, $0"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack import samples
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "stopped-users"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("samples")
    samples.generate(folder)
    portrait = {t.name: d for d, t in samples.people_samples()}["people/ada/portrait.jpg"]
    with LocalStack() as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="photos/team.jpg", Body=(folder / "group/team.jpg").read_bytes())
        s3.put_object(Bucket=BUCKET, Key="people/ada/a-portrait.jpg", Body=portrait)
        s3.put_object(
            Bucket=BUCKET, Key="people/ada/b-nobody.jpg", Body=(folder / "empty/nothing.jpg").read_bytes()
        )
        yield local


def test_a_sync_stopped_by_a_photo_without_a_face_reports_the_calls_it_made(
    stack: LocalStack, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/photos/", "--output", str(tmp_path / "out"),
               "--analyses", "user_search", "--collection", "crew", "--users", f"s3://{BUCKET}/people/",
               "--summary-json", str(summary)]  # fmt: skip
    environment = {
        **os.environ,
        **stack.env,
        "REKBATCH_DASK__N_WORKERS": "1",
        "REKBATCH_REPORT__ENABLED": "false",
    }
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "b-nobody.jpg: no face found in it" in done.stderr.strip().splitlines()[-1]

    logged = Counter((c["operation"], c["outcome"]) for c in stack.calls())
    assert logged[("IndexFaces", "ok")] == 2  # the portrait's face, then the photo without one
    assert logged[("CreateUser", "ok")] == 1
    document = json.loads(summary.read_text())
    said = {(c["operation"], c["outcome"]): c["count"] for c in document["calls"]}
    assert said == dict(logged)
    assert document["estimated_cost_usd"] == pytest.approx(2 * 0.001)  # [pricing] user_faces per IndexFaces
