"""An S3 Inventory report of a bucket, written into the local S3 as AWS writes one (moto has none).

Layout (https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html):
`DEST_PREFIX/SOURCE_BUCKET/CONFIG_ID/YYYY-MM-DDTHH-MMZ/manifest.json`, its `manifest.checksum` (the
MD5 of manifest.json, hex), and the data files under `DEST_PREFIX/SOURCE_BUCKET/CONFIG_ID/data/`:
gzipped CSV without a header, every value quoted and keys URL-encoded (space as '+'); ORC and Parquet
with snake-case columns and keys as they are. `python -m local_stack inventory` runs `write_inventory`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq

FORMATS = ("CSV", "ORC", "Parquet")
#: The fields written, as a CSV schema names them, and each one's ORC/Parquet column and Arrow type.
_FIELDS = (
    ("Bucket", "bucket", pa.string()),
    ("Key", "key", pa.string()),
    ("VersionId", "version_id", pa.string()),
    ("IsLatest", "is_latest", pa.bool_()),
    ("IsDeleteMarker", "is_delete_marker", pa.bool_()),
    ("Size", "size", pa.int64()),
    ("LastModifiedDate", "last_modified_date", pa.timestamp("ms", tz="UTC")),
    ("ETag", "e_tag", pa.string()),
    ("StorageClass", "storage_class", pa.string()),
)
_VERSION_FIELDS = ("VersionId", "IsLatest", "IsDeleteMarker")
_ORC_TYPES = {"string": "string", "bool": "boolean", "int64": "bigint", "timestamp[ms, tz=UTC]": "timestamp"}
_PARQUET_TYPES = {
    "string": "optional binary {} (UTF8)",
    "bool": "optional boolean {}",
    "int64": "optional int64 {}",
    "timestamp[ms, tz=UTC]": "optional int64 {} (TIMESTAMP_MILLIS)",
}
_SUFFIXES = {"CSV": ".csv.gz", "ORC": ".orc", "Parquet": ".parquet"}


def encode_key(key: str) -> str:
    """A key as a CSV inventory holds it: URL-encoded as an HTML form is (Java's URLEncoder: space as
    '+', '/' as %2F, '~' as %7E; only letters, digits and "-_.*" kept)."""
    return quote_plus(key, safe="-_.*").replace("~", "%7E")


def write_inventory(
    s3: Any,
    bucket: str,
    destination: str,
    file_format: str,
    *,
    config_id: str = "rekbatch",
    all_versions: bool = False,
    rows_per_file: int = 1000,
    now: datetime | None = None,
) -> str:
    """Write `bucket`'s inventory to `destination` (s3://D/PREFIX/) as AWS would; return the
    manifest's s3:// URL. `all_versions`: every version and delete marker (IncludedObjectVersions=All)."""
    dest_bucket, _, dest_prefix = destination.removeprefix("s3://").partition("/")
    base = f"{dest_prefix}{bucket}/{config_id}"
    fields = [f for f in _FIELDS if all_versions or f[0] not in _VERSION_FIELDS]
    files = []
    rows = list(_rows(s3, bucket, all_versions))
    for start in range(0, max(len(rows), 1), rows_per_file):
        body = _data_file(file_format, fields, rows[start : start + rows_per_file])
        key = f"{base}/data/{uuid.uuid4()}{_SUFFIXES[file_format]}"
        s3.put_object(Bucket=dest_bucket, Key=key, Body=body)
        files.append({"key": key, "size": len(body), "MD5checksum": _md5(body)})
    when = now or datetime.now(UTC)
    manifest = {
        "sourceBucket": bucket,
        "destinationBucket": f"arn:aws:s3:::{dest_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(when.timestamp() * 1000)),
        "fileFormat": file_format,
        "fileSchema": file_schema(file_format, fields),
        "files": files,
    }
    text = json.dumps(manifest, indent=4).encode()
    folder = f"{base}/{when:%Y-%m-%dT%H-%MZ}"
    s3.put_object(Bucket=dest_bucket, Key=f"{folder}/manifest.json", Body=text)
    s3.put_object(Bucket=dest_bucket, Key=f"{folder}/manifest.checksum", Body=_md5(text))
    return f"s3://{dest_bucket}/{folder}/manifest.json"


def _md5(body: bytes) -> str:
    """The MD5 AWS gives a data file and the manifest (a checksum, not a security measure)."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def file_schema(file_format: str, fields: list[tuple[str, str, pa.DataType]]) -> str:
    """The manifest's `fileSchema` for these fields, in the format's own notation."""
    if file_format == "CSV":
        return ", ".join(name for name, _, _ in fields)
    if file_format == "ORC":
        return "struct<" + ",".join(f"{col}:{_ORC_TYPES[str(t)]}" for _, col, t in fields) + ">"
    columns = [_PARQUET_TYPES[str(t)].format(col) for _, col, t in fields]
    columns[:2] = ["required binary bucket (UTF8)", "required binary key (UTF8)"]
    return "message s3.inventory { " + "; ".join(columns) + ";}"


def _rows(s3: Any, bucket: str, all_versions: bool) -> Iterator[dict[str, Any]]:
    """One dict per object (or version and delete marker), keyed by the CSV field names."""
    if not all_versions:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                yield _row(bucket, item, {})
        return
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []):
            yield _row(bucket, item, {"VersionId": item["VersionId"], "IsLatest": item["IsLatest"]})
        for item in page.get("DeleteMarkers", []):
            marker = {"VersionId": item["VersionId"], "IsLatest": item["IsLatest"], "IsDeleteMarker": True}
            yield {"Bucket": bucket, "Key": item["Key"], "LastModifiedDate": item["LastModified"], **marker}


def _row(bucket: str, item: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    return {
        "Bucket": bucket,
        "Key": item["Key"],
        "Size": item["Size"],
        "LastModifiedDate": item["LastModified"],
        "ETag": item["ETag"].strip('"'),
        "StorageClass": item.get("StorageClass", "STANDARD"),
        **({"IsDeleteMarker": False} | version if version else {}),
    }


def _data_file(
    file_format: str, fields: list[tuple[str, str, pa.DataType]], rows: list[dict[str, Any]]
) -> bytes:
    if file_format == "CSV":
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in rows:
            writer.writerow(_csv_value(name, row.get(name)) for name, _, _ in fields)
        return gzip.compress(text.getvalue().encode())
    schema = pa.schema([(col, t) for _, col, t in fields])
    table = pa.table({col: [row.get(name) for row in rows] for name, col, _ in fields}, schema=schema)
    out = io.BytesIO()
    (pa_orc.write_table if file_format == "ORC" else pq.write_table)(table, out)
    return out.getvalue()


def _csv_value(name: str, value: Any) -> str:
    """A CSV inventory's text for a value: keys URL-encoded, booleans lowercase, ISO 8601 times in UTC
    with milliseconds, nothing for a missing value (a delete marker's size)."""
    if value is None:
        return ""
    if name == "Key":
        return encode_key(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)
