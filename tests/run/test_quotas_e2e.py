"""The run's quotas come from the user, else Service Quotas, else the default, end to end: the CLI as a
subprocess on the local stack, whose endpoint answers `ListServiceQuotas` with the quotas it enforces
(or denies it). What each run used, and where from, is in its summary JSON, its printed summary and its
`runs` row; a dry run shows what a run would use."""

from __future__ import annotations

import hashlib
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

from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET, PREFIX = "quotas", "in/"
IMAGES = 12
#: A low quota, enforced by the endpoint and listed by its Service Quotas: the run must read and keep it.
LOW = 4.0
#: A small cluster and no quota of the user's: rekognition.tps and [quotas] unset.
CLUSTER = (
    "[dask]\nn_workers = 1\nthreads_per_worker = 2\nbatch_size = 4\n\n[rekognition]\ncalls_in_flight = 2\n"
)


def seeded(stack: LocalStack) -> LocalStack:
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=BUCKET)
    image = make_image(rects=(("face", (40, 40, 60, 80)),))
    for i in range(IMAGES):
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{i:03d}.jpg", Body=image)
    return stack


@pytest.fixture(scope="module")
def low_stack() -> Iterator[LocalStack]:
    with LocalStack(tps=LOW) as stack:
        yield seeded(stack)


@pytest.fixture(scope="module")
def denying_stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--service-quotas", "deny"]) as stack:
        yield seeded(stack)


def rekbatch(stack: LocalStack, tmp: Path, config: str, *args: str) -> dict[str, Any]:
    """`rekbatch run` over the bucket with `config`: its exit code, stderr, stdout, summary JSON, and
    the calls it made (Rekognition's, Service Quotas')."""
    before = {service: len(stack.calls(service)) for service in ("rekognition", "service-quotas")}
    config_file, summary = tmp / "run.toml", tmp / "summary.json"
    config_file.write_text(config)
    command = [sys.executable, "-m", "batch", "run", "--config", str(config_file),
               "--analyses", "labels,faces", "--input", f"s3://{BUCKET}/{PREFIX}",
               "--summary-json", str(summary), *args]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return {
        **json.loads(summary.read_text()),
        "stderr": result.stderr,
        "stdout": result.stdout,
        "calls": stack.calls()[before["rekognition"] :],
        "quota_calls": stack.calls("service-quotas")[before["service-quotas"] :],
    }


def quotas(run: dict[str, Any]) -> dict[str, tuple[float, str]]:
    return {q["operation"]: (q["tps"], q["source"]) for q in run["quotas"]}


def runs_row(output: Path) -> dict[str, Any]:
    (path,) = (output / "runs").rglob("*.parquet")
    (row,) = pq.read_table(path).to_pylist()
    return row


def test_a_run_reads_the_accounts_quotas_and_holds_to_them(low_stack: LocalStack, tmp_path: Path) -> None:
    """No quota set: the run reads the endpoint's 4 calls/s from Service Quotas, and at that rate the
    endpoint (which allows exactly that) throttles nothing; at the old default of 50 it would."""
    run = rekbatch(low_stack, tmp_path, CLUSTER, "--output", str(tmp_path / "out"))
    used = {"DetectLabels": (LOW, "service-quotas"), "DetectFaces": (LOW, "service-quotas")}
    assert quotas(run) == used
    assert [c["operation"] for c in run["quota_calls"]] == ["ListServiceQuotas"]
    assert run["images"]["analysed"] == IMAGES
    outcomes = Counter(c["outcome"] for c in run["calls"])
    assert outcomes == {"ok": 2 * IMAGES}, outcomes
    assert run["throttled"] == 0
    assert "rekbatch: quotas:" not in run["stderr"]
    assert "quotas, calls/s: 4 for each operation (service-quotas)" in run["stdout"]
    row = runs_row(tmp_path / "out")
    assert {q["operation"]: (q["tps"], q["source"]) for q in row["quotas"]} == used
    assert (
        "DetectFaces 4 (service-quotas), DetectLabels 4 (service-quotas)" in Path(run["report"]).read_text()
    )


def test_a_denied_read_falls_back_to_the_default_and_says_so_in_one_line(
    denying_stack: LocalStack, tmp_path: Path
) -> None:
    run = rekbatch(denying_stack, tmp_path, CLUSTER, "--output", str(tmp_path / "out"))
    assert quotas(run) == {"DetectLabels": (50.0, "default"), "DetectFaces": (50.0, "default")}
    notes = [line for line in run["stderr"].splitlines() if line.startswith("rekbatch: quotas:")]
    assert notes == [
        "rekbatch: quotas: Service Quotas not readable in us-east-1 (AccessDeniedException: User: "
        "arn:aws:iam::123456789012:user/local is not authorized to perform: "
        "servicequotas:ListServiceQuotas); using the default 50 calls/s for DetectLabels, DetectFaces "
        "(set [quotas] or --tps to choose)"
    ]
    assert [c["outcome"] for c in run["quota_calls"]] == ["AccessDeniedException"]
    assert run["images"]["analysed"] == IMAGES
    row = runs_row(tmp_path / "out")
    assert {q["source"] for q in row["quotas"]} == {"default"}


def test_a_quota_set_by_flag_wins_and_service_quotas_is_not_asked(
    low_stack: LocalStack, tmp_path: Path
) -> None:
    run = rekbatch(low_stack, tmp_path, CLUSTER, "--dry-run", "--tps", "3")
    assert quotas(run) == {"DetectLabels": (3.0, "flag"), "DetectFaces": (3.0, "flag")}
    assert run["quota_calls"] == []
    assert "quotas a run would use, calls/s: 3 for each operation (flag)" in run["stdout"]


def test_quotas_set_in_the_config_win_and_the_others_are_read(low_stack: LocalStack, tmp_path: Path) -> None:
    """`[quotas] labels` sets DetectLabels only: DetectFaces is read; with `rekognition.tps` set too, every
    operation has a quota of the user's and Service Quotas is not asked."""
    partly = rekbatch(low_stack, tmp_path, CLUSTER + "\n[quotas]\nlabels = 2.5\n", "--dry-run")
    assert quotas(partly) == {"DetectLabels": (2.5, "config"), "DetectFaces": (LOW, "service-quotas")}
    assert [c["operation"] for c in partly["quota_calls"]] == ["ListServiceQuotas"]
    assert "DetectFaces 4 (service-quotas), DetectLabels 2.5 (config)" in partly["stdout"]
    fully = rekbatch(low_stack, tmp_path, CLUSTER + "tps = 7.0\n\n[quotas]\nlabels = 2.5\n", "--dry-run")
    assert quotas(fully) == {"DetectLabels": (2.5, "config"), "DetectFaces": (7.0, "config")}
    assert fully["quota_calls"] == []


def test_compare_faces_with_several_reference_photos_commits(low_stack: LocalStack, tmp_path: Path) -> None:
    """Each reference photo is a part of compare_faces, settled with its own digest in `analyses_done`:
    8 parts of one image are not "settled more than once". The run used to abort with exit 4 (84 such
    (key, etag, analysis) counted). Its driver's DetectFaces on the photos are held to the quota read."""
    s3, digests = low_stack.s3_client(), set()
    for i in range(8):
        face = make_image(rects=(("face", (30 + i, 40, 60, 80)),))
        s3.put_object(Bucket=BUCKET, Key=f"refs/{i}.jpg", Body=face)
        digests.add(hashlib.sha256(face).hexdigest())
    before = len(low_stack.calls())
    config_file = tmp_path / "run.toml"
    config_file.write_text(CLUSTER)
    command = [sys.executable, "-m", "batch", "run", "--config", str(config_file),
               "--analyses", "compare_faces", "--reference", f"s3://{BUCKET}/refs/",
               "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, **low_stack.env}, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    references = [c for c in low_stack.calls()[before:] if c["digest"] in digests]  # sent as bytes
    assert {c["digest"] for c in references} == digests
    assert Counter(c["outcome"] for c in references) == {"ok": 8}
