"""`rekbatch run --inventory` end to end: the CLI as a subprocess on the local stack, driven by an S3
Inventory report the local stack wrote in each of AWS's formats, against a listing-driven run.

The job's S3 requests go through a relay that records them, so the test sees that an inventory-driven
run never lists the input bucket.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest

from batch.query import views
from local_stack.inventory import write_inventory
from local_stack.samples import GroundTruth
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "inv-e2e-input"
PREFIX = "photos/"
REPORTS = "inv-e2e-reports"
#: Keys a CSV inventory must URL-encode, copies of a sample JPEG.
ODD_KEYS = (f"{PREFIX}odd/a b+c%d.jpg", f"{PREFIX}odd/ünï cödé ~.jpg", f"{PREFIX}odd/100%+.jpeg")


class Relay:
    """An HTTP relay in front of moto that records each request's method and path (with query)."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target).netloc
        self.requests: list[tuple[str, str]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                relay.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                connection = http.client.HTTPConnection(relay.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def listings_of(self, bucket: str) -> list[str]:
        """The ListObjectsV2 requests on `bucket` (path-style: GET /bucket?list-type=2...)."""
        return [path for method, path in self.requests if method == "GET" and path.startswith(f"/{bucket}?")
                and "list-type=2" in path]  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def relay(stack: LocalStack) -> Iterator[Relay]:
    relay = Relay(stack.s3_url)
    yield relay
    relay.server.shutdown()


@pytest.fixture(scope="module")
def truth(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=REPORTS)
    truth = seed_samples(s3, BUCKET, PREFIX, tmp_path_factory.mktemp("samples"))
    jpeg = next(s for s in truth.good() if s.key.endswith(".jpg"))
    for key in ODD_KEYS:
        s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": jpeg.key})
    return truth


@pytest.fixture(scope="module")
def manifests(stack: LocalStack, truth: GroundTruth) -> dict[str, str]:
    """The input bucket's inventory in each format, as it stood before any run."""
    s3 = stack.s3_client()
    return {
        fmt: write_inventory(s3, BUCKET, f"s3://{REPORTS}/{fmt.lower()}/", fmt, rows_per_file=7)
        for fmt in ("CSV", "ORC", "Parquet")
    }


def run_cli(
    stack: LocalStack, relay: Relay, tmp: Path, *args: str, expect: int = 0
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A run of labels into a fresh local output (`tmp/out`), with its summary in `tmp/summary.json`."""
    output = tmp / "out"
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(output), "--analyses", "labels",
               "--summary-json", str(tmp / "summary.json"), *args]  # fmt: skip
    env = {**os.environ, **stack.env, "AWS_ENDPOINT_URL_S3": relay.url}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == expect, result.stderr
    return result, output


def finished(
    stack: LocalStack, relay: Relay, tmp: Path, *args: str
) -> tuple[dict[str, Any], duckdb.DuckDBPyConnection]:
    """A run that exited 0: its summary, and SQL over its tables."""
    _, output = run_cli(stack, relay, tmp, *args)
    return json.loads((tmp / "summary.json").read_text()), views.connect(str(output))


def committed(sql: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """Each image's row and its labels, as the tables hold them."""
    query = """SELECT i.key, i.etag, i.size_bytes, i.status, i.status_reason, list(l.name ORDER BY l.name)
               FROM images i LEFT JOIN labels l USING (key) GROUP BY ALL ORDER BY i.key"""
    return sql.execute(query).fetchall()


@pytest.fixture(scope="module")
def listing_run(
    stack: LocalStack, relay: Relay, manifests: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Any, ...]]:
    before = len(relay.listings_of(BUCKET))
    _, sql = finished(stack, relay, tmp_path_factory.mktemp("listing"))
    assert len(relay.listings_of(BUCKET)) > before  # the relay sees a listing-driven run list
    return committed(sql)


@pytest.mark.parametrize("fmt", ["CSV", "ORC", "Parquet"])
def test_an_inventory_in_each_format_commits_what_the_listing_does_without_listing(
    stack: LocalStack,
    relay: Relay,
    *,
    manifests: dict[str, str],
    listing_run: list[tuple[Any, ...]],
    fmt: str,
    tmp_path: Path,
) -> None:
    listed_before = len(relay.listings_of(BUCKET))
    summary, sql = finished(stack, relay, tmp_path, "--inventory", manifests[fmt])
    assert summary["status"] == "completed"
    assert committed(sql) == listing_run
    assert {key for key, *_ in listing_run} >= set(ODD_KEYS)
    assert len(relay.listings_of(BUCKET)) == listed_before  # no ListObjectsV2 on the input bucket


def test_objects_changed_since_the_inventory_are_changed_and_new_ones_unseen(
    stack: LocalStack, relay: Relay, truth: GroundTruth, tmp_path: Path
) -> None:
    s3 = stack.s3_client()
    command = [sys.executable, "-m", "local_stack", "inventory", "--bucket", BUCKET, "--destination",
               f"s3://{REPORTS}/later/", "--format", "CSV", "--s3-endpoint", stack.s3_url]  # fmt: skip
    written = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    manifest = written.stdout.strip()
    assert manifest.startswith(f"s3://{REPORTS}/later/{BUCKET}/rekbatch/")
    jpegs = [s.key for s in truth.good() if s.key.endswith(".jpg")]
    overwritten, deleted = ODD_KEYS[0], jpegs[1]
    body = s3.get_object(Bucket=BUCKET, Key=jpegs[2])["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=overwritten, Body=body)
    s3.delete_object(Bucket=BUCKET, Key=deleted)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}new-since.jpg", Body=body)
    summary, sql = finished(stack, relay, tmp_path, "--inventory", manifest)
    rows = {key: status for key, _, _, status, *_ in committed(sql)}
    assert rows[overwritten] == rows[deleted] == "changed"
    assert f"{PREFIX}new-since.jpg" not in rows
    assert summary["status"] == "completed"


def test_a_damaged_data_file_ends_the_run_with_a_reason_and_no_commit(
    stack: LocalStack, relay: Relay, truth: GroundTruth, tmp_path: Path
) -> None:
    s3 = stack.s3_client()
    manifest = write_inventory(s3, BUCKET, f"s3://{REPORTS}/damaged/", "Parquet", rows_per_file=5)
    document = json.loads(s3.get_object(Bucket=REPORTS, Key=manifest.split("/", 3)[3])["Body"].read())
    last = document["files"][-1]["key"]  # the run has started when it reads the last file
    s3.put_object(Bucket=REPORTS, Key=last, Body=b"PAR1 not what the manifest says")
    result, output = run_cli(stack, relay, tmp_path, "--inventory", manifest, expect=3)
    reason = result.stderr.strip().splitlines()[-1]
    assert reason.startswith(f"rekbatch: error: run.inventory: s3://{REPORTS}/{last}: MD5 "), result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["status"] != "completed"
    assert not list((output / "_commits").glob("*.json"))
