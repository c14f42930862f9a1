"""A run without a region or credentials stops before anything is listed, with one line saying how to
set them (exit 2); botocore's own lookup decides, so the config's region counts too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The CLI runs in a subprocess that starts no server: allowed by `make test-fast` (--forbid-servers).
pytestmark = pytest.mark.offline_subprocess

#: A port nothing listens on: had the run listed the input, it would fail there with exit 3.
DEAD_S3 = "http://127.0.0.1:9"


def rekbatch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REKBATCH_"))}
    no_files = {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    fixed = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_S3": DEAD_S3, **no_files}
    command = [
        sys.executable,
        "-m",
        "batch",
        "run",
        "--input",
        "s3://photos/in/",
        "--output",
        str(tmp_path / "out"),
    ]
    return subprocess.run(
        command, env={**clean, **fixed, **env}, capture_output=True, text=True, timeout=60, check=False
    )


KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_no_region_stops_before_listing_with_how_to_set_it(tmp_path: Path) -> None:
    done = rekbatch(tmp_path, **KEYS)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("rekbatch: error: no AWS region: ")
    assert "set AWS_DEFAULT_REGION" in done.stderr
    assert "rekognition.region" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_no_credentials_stop_before_listing_with_how_to_set_them(tmp_path: Path) -> None:
    done = rekbatch(tmp_path, AWS_DEFAULT_REGION="eu-west-1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("rekbatch: error: no AWS credentials found: ")
    assert len(done.stderr.splitlines()) == 1


def test_the_configs_region_is_enough_and_the_run_goes_on_to_list(tmp_path: Path) -> None:
    done = rekbatch(tmp_path, REKBATCH_REKOGNITION__REGION="eu-west-1", **KEYS)
    assert done.returncode == 3, done.stderr  # the dead S3 port: it got past the check and listed
    assert "no AWS region" not in done.stderr
