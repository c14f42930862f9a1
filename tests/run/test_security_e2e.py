"""Issue 6, operations and security, on the local stack: output encryption and what DEBUG logs hold.

The CLI runs as a subprocess (a Dask LocalCluster with one worker process) against moto's S3 server,
which also serves KMS and records each object's server-side encryption, and our Rekognition endpoint.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import make_image

from batch.storage.sink import Destination
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INPUT_BUCKET = "secure-input"
OUTPUT_BUCKET = "secure-output"
PREFIX = "photos/"
IMAGES = {
    f"{PREFIX}face.jpg": make_image(rects=(("face", (100, 60, 80, 90)),)),
    f"{PREFIX}box.png": make_image(rects=(("box", (20, 20, 120, 100)),), fmt="PNG"),
    f"{PREFIX}plain.jpg": make_image(size=(400, 300)),
}
#: Credentials nobody could mistake for anything else in a log.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAREKBATCHLEAKTEST",
    "AWS_SECRET_ACCESS_KEY": "rekbatch/secret+Leak-Test-0123456789abcdefXYZ",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEREKBATCHsessionTOKENleakTEST0123456789",
}

#: Dask's logging config (new style: `logging.config.dictConfig`), read by every process that imports
#: distributed; a LocalCluster's `silence_logs` does not touch these handlers.
DASK_DEBUG_LOGGING = """
logging:
  version: 1
  disable_existing_loggers: false
  handlers:
    stderr: {class: logging.StreamHandler, level: DEBUG}
  loggers:
    botocore: {level: DEBUG, handlers: [stderr]}
    urllib3: {level: DEBUG, handlers: [stderr]}
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        s3 = local.s3_client()
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            s3.create_bucket(Bucket=bucket)
        for key, body in IMAGES.items():
            s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)
        yield local


def run_cli(
    stack: LocalStack, tmp: Path, output: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{INPUT_BUCKET}/{PREFIX}", "--output", output, "--analyses", "labels,faces",
               "--summary-json", str(tmp / "summary.json"), *args]  # fmt: skip
    environment = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1", **(env or {})}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)


def encryption_of(s3: Any, bucket: str, key: str) -> tuple[str | None, str | None]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


def test_sse_s3_on_published_and_created_files(stack: LocalStack) -> None:
    s3 = stack.s3_client()
    encrypted = Destination(f"s3://{OUTPUT_BUCKET}/sse-s3", sse="AES256")
    encrypted.publish("labels/dt=2026-11-25/r1-a1-000000.parquet", b"data", s3)
    assert encrypted.create("_commits/r1.json", b"{}", s3)
    default = Destination(f"s3://{OUTPUT_BUCKET}/default")
    default.publish("labels/dt=2026-11-25/r1-a1-000000.parquet", b"data", s3)
    sse_s3 = ("AES256", None)
    assert encryption_of(s3, OUTPUT_BUCKET, "sse-s3/labels/dt=2026-11-25/r1-a1-000000.parquet") == sse_s3
    assert encryption_of(s3, OUTPUT_BUCKET, "sse-s3/_commits/r1.json") == sse_s3
    assert encryption_of(s3, OUTPUT_BUCKET, "default/labels/dt=2026-11-25/r1-a1-000000.parquet") == (
        None,
        None,
    )


def test_a_run_writes_every_output_object_with_the_kms_key(stack: LocalStack, tmp_path: Path) -> None:
    kms = boto3.session.Session().client(
        "kms",
        endpoint_url=stack.s3_url,  # moto's server serves every service it mocks
        region_name=stack.env["AWS_DEFAULT_REGION"],
        aws_access_key_id=stack.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.env["AWS_SECRET_ACCESS_KEY"],
    )
    key_arn = kms.create_key(Description="rekbatch output")["KeyMetadata"]["Arn"]
    env = {"REKBATCH_OUTPUT__SSE": "aws:kms", "REKBATCH_OUTPUT__KMS_KEY_ID": key_arn}
    result = run_cli(stack, tmp_path, f"s3://{OUTPUT_BUCKET}/kms-run", env=env)
    assert result.returncode == 0, result.stderr
    s3 = stack.s3_client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kms-run/")["Contents"]]
    kinds = {key.split("/")[1] for key in keys}
    assert {"images", "labels", "faces", "runs", "_runs", "_commits", "_reports"} <= kinds
    assert {key: encryption_of(s3, OUTPUT_BUCKET, key) for key in keys} == dict.fromkeys(
        keys, ("aws:kms", key_arn)
    )


def test_debug_logs_hold_no_credentials_or_image_bytes(stack: LocalStack, tmp_path: Path) -> None:
    """Done when 9. Dask's logging config puts botocore and urllib3 at DEBUG, with a handler, in every
    process that imports distributed, the workers included (as someone debugging Dask might): the job
    must hold the AWS loggers at WARNING anyway, in the driver and in each worker process."""
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "logging.yaml").write_text(DASK_DEBUG_LOGGING)
    env = {**FAKE_CREDENTIALS, "DASK_CONFIG": str(tmp_path / "dask")}
    result = run_cli(stack, tmp_path, str(tmp_path / "out"), "--debug", "--image-source", "bytes", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"]["analysed"] == len(IMAGES)
    logs = result.stdout + result.stderr + (tmp_path / "summary.json").read_text()
    assert " DEBUG batch.run.drive: batch " in logs  # the level was active
    for secret in FAKE_CREDENTIALS.values():
        assert secret not in logs
    for key, body in IMAGES.items():
        encoded = base64.b64encode(body).decode()
        for start in range(0, len(encoded) - 40, len(encoded) // 8):
            assert encoded[start : start + 40] not in logs, key
        raw = repr(body[len(body) // 2 : len(body) // 2 + 24])[2:-1]  # as a bytes repr would print it
        assert raw not in logs, key
