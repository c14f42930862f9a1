"""S3 Inventory reports as the run's input: the manifest and its rows, read as AWS writes them. Pure.

An inventory report is a `manifest.json` (`sourceBucket`, `destinationBucket`, `fileFormat` CSV, ORC
or Parquet, `fileSchema`, and `files`: data files in the destination bucket with their `key`, `size`
and `MD5checksum`). A CSV file has no header: its columns are `fileSchema`'s field names in order
("Bucket, Key, Size, LastModifiedDate, ETag, ..."), every value quoted, and keys URL-encoded as HTML
forms encode them (space as '+'). ORC and Parquet files name their columns in snake case (`key`,
`size`, `last_modified_date`, `e_tag`, `is_latest`, `is_delete_marker`) and keep keys as they are.
See https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from batch.core.errors import InputUnreachable
from batch.core.redaction import one_line
from batch.core.selection import ListedObject

#: The formats S3 Inventory writes, as the manifest's `fileFormat` names them.
FORMATS = ("CSV", "ORC", "Parquet")
#: A CSV schema's field name -> the column name ORC and Parquet files use (the snake-case form).
COLUMNS = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag",
}
#: What the run needs of each object: the optional fields an inventory must be configured with.
REQUIRED = ("key", "size", "last_modified_date", "e_tag")
#: The columns a row is read for: those, and which version a row is (in an inventory of all versions).
READ = frozenset({*REQUIRED, "is_latest", "is_delete_marker"})


class InventoryInvalid(InputUnreachable):
    """The inventory cannot drive a run: its manifest or a data file is not what AWS writes, or it
    lacks a field the run needs (exit 3, like an input that cannot be read)."""


@dataclass(frozen=True)
class InventoryFile:
    """One data file of the report, in the destination bucket."""

    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class InventoryManifest:
    source_bucket: str
    destination_bucket: str
    file_format: str
    #: The columns of the data files in snake case (`COLUMNS`' values and any other field's).
    columns: tuple[str, ...]
    files: tuple[InventoryFile, ...]


def parse_manifest(text: bytes | str, where: str) -> InventoryManifest:
    """The manifest as AWS writes it; InventoryInvalid naming `where` and what is wrong otherwise."""
    try:
        document = json.loads(text)
        fmt = document["fileFormat"]
        manifest = InventoryManifest(
            source_bucket=document["sourceBucket"],
            destination_bucket=re.sub(r"^arn:[a-z-]+:s3:::", "", document["destinationBucket"]),
            file_format=fmt,
            columns=schema_columns(fmt, document["fileSchema"]),
            files=tuple(InventoryFile(f["key"], int(f["size"]), f["MD5checksum"]) for f in document["files"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InventoryInvalid(f"{where}: not an S3 Inventory manifest: {reason}") from None
    twice = [key for key, n in Counter(file.key for file in manifest.files).items() if n > 1]
    if twice:  # every object of it would be listed, and paid for, twice
        raise InventoryInvalid(f"{where}: lists the data file {twice[0]} more than once")
    missing = [name for name in REQUIRED if name not in manifest.columns]
    if missing:
        fields = ", ".join(k for k, v in COLUMNS.items() if v in missing)
        raise InventoryInvalid(f"{where}: the inventory lacks {fields}: add them to its optional fields")
    return manifest


def schema_columns(file_format: str, schema: str) -> tuple[str, ...]:
    """The column names of `fileSchema`, in snake case: a CSV's "Bucket, Key, ...", an ORC's
    "struct<bucket:string,key:string,...>" or a Parquet's "message s3.inventory { required binary
    bucket (UTF8); ... }"."""
    if file_format == "CSV":
        return tuple(COLUMNS.get(name.strip(), _snake(name.strip())) for name in schema.split(","))
    if file_format == "ORC":
        return tuple(re.findall(r"[<,]\s*(\w+)\s*:", schema))
    if file_format == "Parquet":
        body = schema[schema.find("{") + 1 : schema.rfind("}")]
        return tuple(field.split("(")[0].split()[-1] for field in body.split(";") if field.strip())
    raise ValueError(f"fileFormat {file_format!r} is none of {', '.join(FORMATS)}")


def _snake(name: str) -> str:
    """`StorageClass` -> `storage_class`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def listed_object(row: Mapping[str, Any], *, url_encoded: bool) -> ListedObject | None:
    """A data file's row as the listing shows the object; None for a row that is not a current
    object (a noncurrent version, or a delete marker, in an inventory of all versions).

    `url_encoded`: the key is URL-encoded (CSV). Values come as the format stores them: strings
    from a CSV ("true", "1234", "2026-01-02T03:04:05.000Z"), typed values from ORC and Parquet. A
    current row without a usable key, size, time or ETag raises InventoryInvalid.
    """
    if not _true(row.get("is_latest", True)) or _true(row.get("is_delete_marker", False)):
        return None
    try:
        key = unquote_plus(row["key"], errors="strict") if url_encoded else row["key"]
        etag, size, modified = (
            str(row["e_tag"]).strip('"'),
            int(row["size"]),
            _timestamp(row["last_modified_date"]),
        )
        if not key or not etag:
            raise ValueError("no key or no ETag")
    except (ValueError, TypeError, KeyError) as exc:  # an object the run cannot pin: not a row to skip
        raise InventoryInvalid(
            one_line(f"a row the inventory cannot hold ({type(exc).__name__}: {exc}): {dict(row)}", 400)
        ) from None
    return ListedObject(key, etag, size, modified)


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _timestamp(value: Any) -> datetime:
    """An aware datetime from a CSV's ISO 8601 text or an ORC or Parquet timestamp (UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))
