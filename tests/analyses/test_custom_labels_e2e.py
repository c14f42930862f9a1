"""Custom Labels and moderation adapters end to end: `rekbatch run` as a subprocess on the local stack,
which hosts a model (STOPPED at first) and an adapter (docs/local-stack.md).

A user checks that a run never starts a model unasked (a model not running stops the run, exit 2, with
one line and no image call), that `--start-models` starts it, analyses, stops it (the endpoint says
STOPPED after) and prices its hours, that the rows carry upright boxes and the model's ARN, that a
different model means analysing again, and that a moderation adapter is sent and `ContentTypes` kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import wait_for

from batch.analyses import custom_labels
from batch.analyses.registry import settings_digest
from batch.query import views
from local_stack import samples
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "models"
PREFIX = "cl/"
MODEL = "arn:aws:rekognition:us-east-1:123456789012:project/widgets/version/widgets.2026-01-01/1767261600000"
ADAPTER = "arn:aws:rekognition:us-east-1:123456789012:project/mod/version/mod.1/1767261600001"
NAMES = ("orientation/exif-1.jpg", "orientation/exif-6.jpg", "orientation/exif-8.jpg", "png/flagged.png")
PX_TOLERANCE = 2


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[samples.GroundTruth, Path]:
    workdir = tmp_path_factory.mktemp("samples")
    return samples.generate(workdir).placed(BUCKET, PREFIX), workdir


def started_stack(truth: tuple[samples.GroundTruth, Path], start_seconds: float) -> LocalStack:
    flags = ["--custom-labels-model", MODEL, "--moderation-adapter", ADAPTER]
    stack = LocalStack(extra_args=[*flags, "--model-start-seconds", str(start_seconds)]).__enter__()
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=BUCKET)
    for name in NAMES:
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{name}", Body=(truth[1] / name).read_bytes())
    return stack


@pytest.fixture(scope="module")
def stack(truth: tuple[samples.GroundTruth, Path]) -> Iterator[LocalStack]:
    local = started_stack(truth, 0.5)
    try:
        yield local
    finally:
        local.close()


def command(out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
            "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(out), *more]  # fmt: skip


def environment(stack: LocalStack, models: list[str]) -> dict[str, str]:
    return {
        **os.environ,
        **stack.env,
        "REKBATCH_DASK__N_WORKERS": "1",
        "REKBATCH_ANALYSES__CUSTOM_LABELS__MODELS": json.dumps(models),
        "REKBATCH_ANALYSES__CUSTOM_LABELS__POLL_SECONDS": "0.1",
        "REKBATCH_ANALYSES__MODERATION__PROJECT_VERSION": json.dumps(ADAPTER),
    }


def rekbatch(stack: LocalStack, out: Path, *more: str, models: list[str] | None = None) -> Any:
    return subprocess.run(
        command(out, *more),
        env=environment(stack, models or [MODEL]),
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def model_status(stack: LocalStack) -> str:
    client = boto3.client("rekognition", endpoint_url=stack.rekognition_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    project = client.describe_projects(ProjectNames=["widgets"])["ProjectDescriptions"][0]["ProjectArn"]
    (version,) = client.describe_project_versions(ProjectArn=project)["ProjectVersionDescriptions"]
    return str(version["Status"])


def rows(out: Path, sql: str) -> list[dict[str, Any]]:
    with views.connect(str(out)) as db:
        result = db.sql(sql)
        return [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]


def test_a_model_not_running_stops_the_run_before_any_image_call(stack: LocalStack, tmp_path: Path) -> None:
    assert model_status(stack) == "STOPPED"
    before = len(stack.calls())
    done = rekbatch(stack, tmp_path / "out", "--analyses", "custom_labels,labels")
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("rekbatch: error:")]
    assert f"model {MODEL} is STOPPED, not RUNNING" in line
    assert "--start-models" in line
    operations = {call["operation"] for call in stack.calls()[before:]}
    assert operations == {"DescribeProjects", "DescribeProjectVersions"}  # no image call, no start
    assert model_status(stack) == "STOPPED"
    assert not (tmp_path / "out" / "_commits").exists()


def test_start_models_starts_analyses_stops_and_prices_the_hours(
    stack: LocalStack, truth: tuple[samples.GroundTruth, Path], tmp_path: Path
) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    before = len(stack.calls())
    done = rekbatch(stack, out, "--analyses", "custom_labels,moderation", "--start-models",
                    "--summary-json", str(summary))  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = stack.calls()[before:]
    operations = [call["operation"] for call in calls]
    detects = [i for i, op in enumerate(operations) if op == "DetectCustomLabels"]
    assert len(detects) == len(NAMES)
    assert (
        operations.index("StartProjectVersion")
        < detects[0]
        < detects[-1]
        < operations.index("StopProjectVersion")
    )
    assert operations.count("StartProjectVersion") == operations.count("StopProjectVersion") == 1
    assert model_status(stack) == "STOPPED"
    moderation = [c for c in calls if c["operation"] == "DetectModerationLabels"]
    assert len(moderation) == len(NAMES)
    assert all(c["model"] == ADAPTER for c in moderation)
    assert all(c["model"] == MODEL for c in calls if c["operation"] == "DetectCustomLabels")

    report = json.loads(summary.read_text())
    assert report["models_started"] == [MODEL]
    assert report["inference_hours"] > 0
    # Both are rounded to 6 decimals in the JSON: the hours' rounding, times 4, is up to 2e-6 of cost.
    assert report["model_cost_usd"] == pytest.approx(report["inference_hours"] * 4.0, abs=3e-6)
    moderation_cost = len(NAMES) * 0.001
    assert report["estimated_cost_usd"] == pytest.approx(report["model_cost_usd"] + moderation_cost, abs=1e-5)
    assert f"model {MODEL}: started by this run and stopped" in done.stdout

    found = rows(out, "SELECT key, name, box_left_px, box_top_px, box_width_px, box_height_px, polygon, "
                      "model_arn FROM custom_labels ORDER BY key, name")  # fmt: skip
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        by_key.setdefault(row["key"], []).append(row)
    for name in NAMES:
        sample = truth[0].by_name(name)
        labels = by_key.get(sample.key, [])
        assert all(row["model_arn"] == MODEL for row in labels)
        boxes = [row for row in labels if row["name"] == "Box"]
        (drawn,) = sample.of_kind("box")
        (row,) = boxes
        got = (row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"])
        assert max(abs(a - b) for a, b in zip(got, drawn.box_px, strict=True)) <= PX_TOLERANCE, name
        assert len(row["polygon"]) == 4
        people = [row for row in labels if row["name"] == "People"]
        assert len(people) == (1 if sample.faces else 0)
        assert all(p["box_left_px"] is None and p["polygon"] is None for p in people)

    (flagged,) = rows(out, "SELECT DISTINCT key, content_types, adapter FROM moderation")
    assert flagged["key"] == truth[0].by_name("png/flagged.png").key
    assert flagged["adapter"] == ADAPTER
    assert [t["name"] for t in flagged["content_types"]] == ["Illustrated"]

    digests = rows(out, "SELECT DISTINCT d.settings_digest FROM images, unnest(analyses_done) AS u(d) "
                        "WHERE d.analysis = 'custom_labels'")  # fmt: skip
    expected = settings_digest(custom_labels.ANALYSIS, custom_labels.Settings(models=(MODEL,)))
    other = custom_labels.Settings(models=(MODEL.replace("widgets.2026", "widgets.2027"),))
    assert [d["settings_digest"] for d in digests] == [expected]
    assert expected != settings_digest(custom_labels.ANALYSIS, other)

    # Nothing new: the next run reads the model's status, starts nothing and sends nothing.
    before = len(stack.calls())
    again = rekbatch(stack, out, "--analyses", "custom_labels,moderation", "--start-models")
    assert again.returncode == 0, again.stderr
    assert {c["operation"] for c in stack.calls()[before:]} == {"DescribeProjects", "DescribeProjectVersions"}


def test_a_signal_while_the_model_starts_stops_it(
    truth: tuple[samples.GroundTruth, Path], tmp_path: Path
) -> None:
    slow = started_stack(truth, 3600)  # the model never gets to RUNNING: the run waits on it
    try:
        out = tmp_path / "out"
        process = subprocess.Popen(
            command(out, "--analyses", "custom_labels", "--start-models"),
            env=environment(slow, [MODEL]),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: (
                process.poll() is not None or "StartProjectVersion" in {c["operation"] for c in slow.calls()}
            )
        )
        assert process.poll() is None, "the run ended before it started the model"
        assert model_status(slow) == "STARTING"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 143, stderr
        assert model_status(slow) == "STOPPED"
        assert [c["operation"] for c in slow.calls()].count("StopProjectVersion") == 1
        assert "DetectCustomLabels" not in {c["operation"] for c in slow.calls()}
    finally:
        slow.close()


def stop_model(stack: LocalStack) -> None:
    """Stop MODEL if it runs (a test that failed part-way leaves the stack as it found it)."""
    if model_status(stack) in ("RUNNING", "STARTING"):
        client = boto3.client("rekognition", endpoint_url=stack.rekognition_url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        client.stop_project_version(ProjectVersionArn=MODEL)


def test_a_model_a_killed_run_started_is_said_by_the_next_run_and_stopped_and_priced_by_start_models(
    stack: LocalStack, tmp_path: Path
) -> None:
    """kill -9 of a `--start-models` driver (an OOM kill, a lost node) once the model runs: the resume
    without `--start-models` warns in one line that the model runs since the killed run started it, and
    the next `--start-models` run, with nothing to analyse, stops it and prices it from that start."""
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    before = len(stack.calls())
    killed = subprocess.Popen(
        command(out, "--analyses", "custom_labels", "--start-models", "--run-id", "k9", "--tps", "1"),
        env=environment(stack, [MODEL]),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (
                killed.poll() is not None
                or "DetectCustomLabels" in {c["operation"] for c in stack.calls()[before:]}
            )
        )
        assert killed.poll() is None, "the run ended before it could be killed"
        killed.kill()
        assert killed.wait() == -signal.SIGKILL
        assert model_status(stack) == "RUNNING"

        resumed = rekbatch(stack, out, "--analyses", "custom_labels", "--resume", "k9")
        assert resumed.returncode == 0, resumed.stderr
        said = [line for line in resumed.stderr.splitlines() if f"model {MODEL} is RUNNING since " in line]
        assert len(said) == 1, resumed.stderr
        assert "started by run k9 of this output, which never stopped it: it bills until stopped" in said[0]
        assert model_status(stack) == "RUNNING"  # not this run's to stop

        adopting = rekbatch(stack, out, "--analyses", "custom_labels", "--start-models",
                            "--summary-json", str(summary))  # fmt: skip
        assert adopting.returncode == 0, adopting.stderr
        assert model_status(stack) == "STOPPED"
        calls = stack.calls()[before:]
        assert [c["operation"] for c in calls].count("StartProjectVersion") == 1
        assert [c["operation"] for c in calls].count("StopProjectVersion") == 1
        report = json.loads(summary.read_text())
        assert (report["models_started"], report["models_adopted"]) == ([], [MODEL])
        (start,) = [c["ts"] for c in calls if c["operation"] == "StartProjectVersion"]
        (stop,) = [c["ts"] for c in calls if c["operation"] == "StopProjectVersion"]
        assert report["inference_hours"] * 3600 >= stop - start  # never below the endpoint's bill
        assert report["model_cost_usd"] == pytest.approx(report["inference_hours"] * 4.0, abs=3e-6)
        assert f"model {MODEL}: started at " in adopting.stdout
        assert "by run k9, which never stopped it, and stopped by this run" in adopting.stdout

        again = rekbatch(stack, out, "--analyses", "custom_labels")  # the record is closed: no warning
        assert again.returncode == 2, again.stderr
        assert "never stopped" not in again.stderr
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        stop_model(stack)


@pytest.mark.parametrize("adapter", [ADAPTER.replace("mod.1", "mod.9"), MODEL], ids=["unknown", "a-model"])
def test_an_adapter_that_does_not_exist_stops_the_run_before_any_image_call(
    stack: LocalStack, tmp_path: Path, adapter: str
) -> None:
    before = len(stack.calls())
    done = subprocess.run(
        command(tmp_path / "out", "--analyses", "moderation,labels"),
        env={
            **environment(stack, [MODEL]),
            "REKBATCH_ANALYSES__MODERATION__PROJECT_VERSION": json.dumps(adapter),
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("rekbatch: error:")]
    assert line.startswith(f"rekbatch: error: analyses.moderation.project_version: adapter {adapter}: no ")
    assert {c["operation"] for c in stack.calls()[before:]} <= {"DescribeProjects", "DescribeProjectVersions"}
    assert not (tmp_path / "out" / "_commits").exists()
