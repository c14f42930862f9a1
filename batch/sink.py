"""Writing Parquet files of rows to a local folder or to S3. The job's only door to its output.

Layout: `DEST/<table>/dt=<run date>/<run_id>-<part>.parquet` (Hive-style `dt` partition, one dataset
per table). Each file is serialised whole in memory and then published in one step (one PUT with a
SHA-256 on S3; a temp file renamed into place locally): pyarrow streaming to S3 publishes a partial
object when a write fails part-way. File names come from the run id and the batch number, never from
S3 keys, so a re-run task rewrites the same file instead of adding a second one.

S3 output goes through boto3 (`batch.s3.put_file`), so it uses the endpoint botocore resolves
(`AWS_ENDPOINT_URL_S3`); `pyarrow.fs.S3FileSystem` would ignore that variable.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch.config import parse_s3_url
from batch.s3 import put_file
from batch.tables import rows_to_table


@dataclass(frozen=True)
class WrittenFile:
    table: str
    path: str
    rows: int
    size_bytes: int


@dataclass(frozen=True)
class Destination:
    """Where the tables go: a local folder or `s3://bucket/prefix`."""

    root: str

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def relative_path(self, table: str, dt: str, name: str) -> str:
        return f"{table}/dt={dt}/{name}.parquet"

    def location(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def publish(self, relative: str, body: bytes, s3_client: Any = None) -> str:
        """Write `body` at `relative` under the root in one step; return the full location."""
        if self.is_s3:
            bucket, prefix = parse_s3_url(self.root, "output")
            key = f"{prefix.rstrip('/')}/{relative}" if prefix.strip("/") else relative
            put_file(s3_client, bucket, key, body)
            return f"s3://{bucket}/{key}"
        path = Path(self.root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: a reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as handle:
            handle.write(body)
            tmp = Path(handle.name)
        tmp.replace(path)
        return str(path)


def parquet_bytes(table: pa.Table, compression: str) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=None if compression == "none" else compression)
    return buffer.getvalue()


def write_tables(
    destination: Destination,
    rows_by_table: Mapping[str, list[dict[str, Any]]],
    schemas: Mapping[str, pa.Schema],
    *,
    dt: str,
    name: str,
    compression: str,
    s3_client: Any = None,
) -> list[WrittenFile]:
    """Write one file per table that has rows, all named `name` in the `dt` partition."""
    written = []
    for table_name, rows in rows_by_table.items():
        if not rows:
            continue
        body = parquet_bytes(rows_to_table(rows, schemas[table_name]), compression)
        location = destination.publish(destination.relative_path(table_name, dt, name), body, s3_client)
        written.append(WrittenFile(table_name, location, len(rows), len(body)))
    return written
