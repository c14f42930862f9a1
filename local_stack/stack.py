"""`LocalStack`: moto's S3 server plus the Rekognition endpoint (a subprocess), started and stopped together.

    with LocalStack(tps=20) as stack:
        monkeypatch.setattr(os, "environ", {**os.environ, **stack.env})  # or export the printed lines
        truth = seed_samples(stack.s3_client(), "images", "incoming/", tmp_path)
        ...
        stack.calls()  # the endpoint's call log, parsed

The shared helper of the batch job's demo, tests and benchmarks; keep its API stable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from local_stack import samples
from local_stack.s3server import MotoS3Server, free_port, stop_process, wait_until_up

log = logging.getLogger(__name__)

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def endpoint_command(
    port: int,
    s3_url: str,
    call_log: Path,
    *,
    tps: float | None = None,
    burst: float | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command that starts our Rekognition endpoint on `port` against the S3 server at `s3_url`."""
    cmd = [sys.executable, "-m", "local_stack", "rekognition", "--port", str(port),
           "--s3-endpoint", s3_url, "--call-log", str(call_log)]  # fmt: skip
    if tps is not None:
        cmd += ["--tps", str(tps)]
    if burst is not None:
        cmd += ["--burst", str(burst)]
    return cmd + list(extra_args)


class LocalStack:
    """Context manager: `__enter__` starts both servers (waiting until they answer), `__exit__` stops both."""

    def __init__(
        self,
        tps: float | None = None,
        burst: float | None = None,
        extra_args: Sequence[str] = (),
        call_log: Path | None = None,
    ) -> None:
        self._tps, self._burst, self._extra = tps, burst, list(extra_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if call_log is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="localstack-")
            call_log = Path(self._tmp.name) / "calls.jsonl"
        self.call_log: Path = call_log
        self._s3 = MotoS3Server()
        self._endpoint: subprocess.Popen[bytes] | None = None
        self.s3_url: str = self._s3.url
        self.rekognition_url: str = ""
        self.env: dict[str, str] = {}

    def _endpoint_command(self, port: int) -> list[str]:
        return endpoint_command(port, self.s3_url, self.call_log, tps=self._tps, burst=self._burst,
                                extra_args=self._extra)  # fmt: skip

    def __enter__(self) -> LocalStack:
        try:
            self._s3.start()
            port = free_port()
            self.rekognition_url = f"http://127.0.0.1:{port}"
            self._endpoint = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
                self._endpoint_command(port), stdout=subprocess.DEVNULL
            )
            wait_until_up(f"{self.rekognition_url}/_health", proc=self._endpoint)
        except BaseException:
            self.close()
            raise
        self.env = {
            "AWS_ENDPOINT_URL_S3": self.s3_url,
            "AWS_ENDPOINT_URL_REKOGNITION": self.rekognition_url,
            "AWS_ENDPOINT_URL_SERVICE_QUOTAS": self.rekognition_url,  # the endpoint answers it too
            **DUMMY_ENV,
        }
        log.info("local stack up: S3 %s, Rekognition %s", self.s3_url, self.rekognition_url)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._endpoint is not None:
            stop_process(self._endpoint)
            self._endpoint = None
        self._s3.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def calls(self, service: str | None = "rekognition") -> list[dict[str, Any]]:
        """The endpoint's call log so far, one dict per call (see docs/local-stack.md for the fields):
        the calls of `service` ("rekognition", "service-quotas"; None: every call)."""
        if not self.call_log.exists():
            return []
        with self.call_log.open(encoding="utf-8") as fh:
            calls = [json.loads(line) for line in fh if line.strip()]
        return [c for c in calls if service is None or c.get("service", "rekognition") == service]

    def s3_client(self) -> Any:
        """A boto3 S3 client on the local S3 (dummy credentials)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.s3_url,
            region_name=DUMMY_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=DUMMY_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(max_pool_connections=32),
        )


def seed_samples(
    s3_client: Any, bucket: str, prefix: str, workdir: Path, *, oversized: bool = False
) -> samples.GroundTruth:
    """Generate the samples into `workdir`, upload them under `prefix` (a few outside it); return the truth.

    Objects outside the prefix go to `outside/<name>` and `<prefix-without-slash>-archive/<name>`; their
    `placement` in the ground truth says so. The bucket is created if missing. `oversized` adds the
    samples over 15 MB.
    """
    truth = samples.generate(workdir, oversized=oversized).placed(bucket, prefix)
    with contextlib.suppress(s3_client.exceptions.BucketAlreadyOwnedByYou):
        s3_client.create_bucket(Bucket=bucket)
    for sample in truth.samples:
        s3_client.put_object(Bucket=bucket, Key=sample.key, Body=(workdir / sample.name).read_bytes())
    return truth
