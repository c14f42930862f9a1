"""A missing bucket, input or output, on the local stack: exit 3 and one line that names the setting,
the bucket and S3's code, the same code on both sides (HeadBucket's bare 404 is NoSuchBucket too)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET = "messages-in"
NO_SUCH_BUCKET = "NoSuchBucket (no bucket of that name: check the name, or create it)"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="p/a.jpg", Body=b"not an image")
        yield local


def rekbatch_run(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch", "run", *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_output_bucket_says_no_such_bucket_as_the_input_side_does(
    stack: LocalStack, tmp_path: Path
) -> None:
    output = rekbatch_run(stack, "--input", f"s3://{BUCKET}/p/", "--output", "s3://no-such-output/tables")
    assert output.returncode == 3
    assert output.stderr.splitlines()[-1] == (
        f"rekbatch: error: run.output: cannot write to s3://no-such-output: {NO_SUCH_BUCKET}"
    )
    input_side = rekbatch_run(stack, "--input", "s3://no-such-input/p/", "--output", str(tmp_path / "o"))
    assert input_side.returncode == 3
    assert input_side.stderr.splitlines()[-1] == (
        f"rekbatch: error: run.input: cannot list s3://no-such-input/p/: {NO_SUCH_BUCKET}"
    )
