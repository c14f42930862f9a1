"""Issue 19: credentials inside an endpoint URL (`http://user:pass@host`) stay out of everything the job
writes or prints: stderr, stdout, the summary JSON, and every file under the output (Parquet values, the
report, manifests). The CLI runs as a subprocess on the local stack, with botocore's endpoint variables
holding userinfo: a dead Rekognition port, a live endpoint that drops every DetectFaces connection, and
a dead S3 port; botocore quotes the endpoint URL in each of those errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_image

from local_stack.s3server import free_port
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "userinfo"
PREFIX = "in/"
IMAGES = 3
USERINFO = "rekuser:pw-LEAK-7f3a9c"
SECRETS = ("pw-LEAK-7f3a9c", "rekuser")
#: One worker process; a dead endpoint spends the retry budget at once; a live one is not retried.
DEAD_CONFIG = "[rekognition]\nmax_attempts = 2\nbackoff_base = 0.01\nretry_budget_capacity = 2.0\n"
LIVE_CONFIG = "[rekognition]\nmax_attempts = 1\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    endpoint_config = tmp_path_factory.mktemp("endpoint") / "endpoint.toml"
    endpoint_config.write_text("[operations.DetectFaces]\nfault_rate_drop = 1.0\n")
    with LocalStack(extra_args=["--config", str(endpoint_config)]) as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        for i in range(IMAGES):
            s3.put_object(
                Bucket=BUCKET, Key=f"{PREFIX}{i}.jpg", Body=make_image(rects=(("box", (40, 40, 90, 70)),))
            )
        yield local


def with_userinfo(url: str) -> str:
    return url.replace("http://", f"http://{USERINFO}@", 1)


def run_cli(
    stack: LocalStack, tmp: Path, analyses: str, config: str = DEAD_CONFIG, **endpoints: str
) -> subprocess.CompletedProcess[str]:
    (tmp / "run.toml").write_text("[dask]\nn_workers = 1\nthreads_per_worker = 1\n\n" + config)
    command = [sys.executable, "-m", "batch", "run", "--config", str(tmp / "run.toml"),
               "--analyses", analyses, "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(tmp / "out"),
               "--summary-json", str(tmp / "summary.json")]  # fmt: skip
    env = {**os.environ, **stack.env, **endpoints}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def everything_written(result: subprocess.CompletedProcess[str], tmp: Path) -> str:
    """stdout, stderr, and every file under `tmp` (the summary JSON, the output): Parquet files by their
    values (they are compressed), the others as they are."""
    texts = [result.stdout, result.stderr]
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        else:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def assert_no_secret(result: subprocess.CompletedProcess[str], tmp: Path) -> str:
    written = everything_written(result, tmp)
    for secret in SECRETS:
        assert secret not in written
    return written


def test_a_dead_rekognition_endpoint_behind_userinfo_aborts_without_printing_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    dead = f"http://{USERINFO}@127.0.0.1:{free_port()}"
    result = run_cli(stack, tmp_path, "labels", AWS_ENDPOINT_URL_REKOGNITION=dead)
    assert result.returncode == 4, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert "retry budget spent" in last_line
    assert "EndpointConnectionError" in last_line
    assert "http://***@127.0.0.1:" in last_line  # the endpoint is still named, for whoever debugs it
    written = assert_no_secret(result, tmp_path)
    assert "EndpointConnectionError" in written  # the error rows of the aborted attempt were scanned
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "aborted"
    assert "http://***@127.0.0.1:" in summary["reason"]


def test_a_live_endpoint_behind_userinfo_keeps_it_out_of_error_rows(
    stack: LocalStack, tmp_path: Path
) -> None:
    endpoints = {
        "AWS_ENDPOINT_URL_REKOGNITION": with_userinfo(stack.rekognition_url),
        "AWS_ENDPOINT_URL_S3": with_userinfo(stack.s3_url),
    }
    result = run_cli(stack, tmp_path, "labels,faces", LIVE_CONFIG, **endpoints)
    assert result.returncode == 0, result.stderr  # committed: every DetectFaces dropped, labels answered
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["images"]["failed"], summary["rows"]["labels"]) == (IMAGES, IMAGES)
    errors = [
        row
        for path in (tmp_path / "out" / "errors").rglob("*.parquet")
        for row in pq.read_table(path).to_pylist()
    ]
    assert [e["error_code"] for e in errors] == ["ConnectionClosedError"] * IMAGES
    assert all('endpoint URL: "http://***@127.0.0.1:' in e["message"] for e in errors)
    assert_no_secret(result, tmp_path)


def test_a_dead_s3_endpoint_behind_userinfo_ends_with_a_redacted_reason(
    stack: LocalStack, tmp_path: Path
) -> None:
    dead = f"http://{USERINFO}@127.0.0.1:{free_port()}"
    result = run_cli(stack, tmp_path, "labels", AWS_ENDPOINT_URL_S3=dead)
    assert result.returncode == 3, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"rekbatch: error: run.input: cannot list s3://{BUCKET}/{PREFIX}: ")
    assert "http://***@127.0.0.1:" in last_line
    assert_no_secret(result, tmp_path)
