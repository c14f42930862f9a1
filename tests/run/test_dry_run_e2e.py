"""The dry run on the demo bucket, the CLI as a subprocess on the local stack: without `--probe` its
counts are upper bounds and say so; with it, the count of images sent and their cost are the real
run's, and no Rekognition call is made (the endpoint's call log stays empty). The real run also shows
the region it called Rekognition in: summary JSON, `runs` row, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch.core.selection import IMAGE_SUFFIXES
from local_stack.samples import GroundTruth
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "rekbatch-demo", "photos/"
#: The one demo sample damaged past its header: only Rekognition's decoding finds it.
DAMAGED = "bad/truncated.jpg"
PRICE = 0.001  # list price of each of the default analyses' calls, per image


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def truth(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    return seed_samples(stack.s3_client(), BUCKET, PREFIX, tmp_path_factory.mktemp("samples"))


def rekbatch(stack: LocalStack, tmp: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`rekbatch run` over the demo prefix: its summary JSON, stdout and the Rekognition calls it made."""
    before = len(stack.calls())
    summary = tmp / f"summary-{os.urandom(4).hex()}.json"
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml")]
    command += ["--input", f"s3://{BUCKET}/{PREFIX}", "--summary-json", str(summary), *args]
    result = subprocess.run(
        command, env={**os.environ, **stack.env, **(env or {})}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return {**json.loads(summary.read_text()), "stdout": result.stdout, "calls": stack.calls()[before:]}


@pytest.fixture(scope="module")
def intact(stack: LocalStack, truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The probing dry run and then the real run over the demo images but the damaged one."""
    tmp = tmp_path_factory.mktemp("intact")
    env = {"REKBATCH_INPUT__EXCLUDE": json.dumps([DAMAGED])}
    probed = rekbatch(stack, tmp, "--dry-run", "--probe", env=env)
    bound = rekbatch(stack, tmp, "--dry-run", env=env)
    ran = rekbatch(stack, tmp, "--output", str(tmp / "out"), env=env)
    return {"probed": probed, "bound": bound, "run": ran, "output": tmp / "out"}


def test_the_plain_dry_run_says_its_counts_are_upper_bounds(intact: dict[str, Any]) -> None:
    bound, ran = intact["bound"], intact["run"]
    assert bound["dry_run"]["kind"] == "bound"
    assert bound["calls"] == []
    assert bound["images"]["to_analyse"] >= ran["images"]["analysed"]
    assert bound["estimated_cost_usd"] >= ran["estimated_cost_usd"]
    first, *_, cost = bound["stdout"].splitlines()
    assert f"at most {bound['images']['to_analyse']} to analyse" in first
    assert f"at most ${bound['estimated_cost_usd']:.4f}" in cost


def test_the_probe_counts_what_the_run_analyses_and_its_cost_without_a_call(intact: dict[str, Any]) -> None:
    probed, ran = intact["probed"], intact["run"]
    assert probed["dry_run"]["kind"] == "probed"
    assert probed["calls"] == []  # headers only: the endpoint saw nothing
    assert ran["images"]["analysed"] > 0
    assert ran["calls"]
    assert probed["images"]["to_analyse"] == ran["images"]["analysed"]
    assert probed["estimated_cost_usd"] == pytest.approx(ran["estimated_cost_usd"])
    assert f"{ran['images']['analysed']} to send" in probed["stdout"]
    assert f"cost of the image calls at list price: ${ran['estimated_cost_usd']:.4f} " in probed["stdout"]


def test_the_probe_counts_the_refused_by_reason_as_the_run_records_them(
    intact: dict[str, Any], truth: GroundTruth
) -> None:
    refused = Counter(
        s.job_error
        for s in truth.in_prefix()
        if s.key.lower().endswith(IMAGE_SUFFIXES) and s.key != PREFIX + DAMAGED and s.job_error
    )
    assert refused
    assert intact["probed"]["dry_run"]["refused"] == dict(refused)
    run_images = intact["run"]["images"]
    assert sum(refused.values()) == run_images["rejected"] + run_images["skipped"]


def test_the_probe_counts_an_image_damaged_past_its_header_as_sent_and_says_so(
    stack: LocalStack, truth: GroundTruth, tmp_path: Path
) -> None:
    """No header read can tell: the count of images sent stays exact, the analysed ones may be fewer."""
    probed = rekbatch(stack, tmp_path, "--dry-run", "--probe")
    sent = [s for s in truth.in_prefix() if s.key.lower().endswith(IMAGE_SUFFIXES) and s.size_bytes]
    sent = [s for s in sent if not s.refused_from_header]
    assert PREFIX + DAMAGED in {s.key for s in sent}
    assert probed["images"]["to_analyse"] == len(sent)
    assert probed["estimated_cost_usd"] == pytest.approx(len(sent) * 5 * PRICE)
    assert "Rekognition may still refuse an image damaged past its header" in probed["stdout"]
    assert probed["calls"] == []


def test_the_region_is_in_the_summary_the_runs_row_and_the_report(
    intact: dict[str, Any], stack: LocalStack
) -> None:
    from batch.query import views

    region = stack.env["AWS_DEFAULT_REGION"]  # as botocore resolves it: the stack sets no other
    ran = intact["run"]
    assert ran["region"] == region
    with views.connect(str(intact["output"])) as sql:
        assert sql.execute("SELECT region FROM runs").fetchall() == [(region,)]
    assert f"Rekognition in {region}" in Path(ran["report"]).read_text()
