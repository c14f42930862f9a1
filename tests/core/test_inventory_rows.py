"""S3 Inventory manifests and rows, as AWS documents and writes them (batch.core.inventory)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.inventory import InventoryInvalid, listed_object, parse_manifest, schema_columns
from batch.core.selection import ListedObject
from local_stack.inventory import encode_key

#: AWS's example manifest of a CSV inventory of all versions (the S3 User Guide, "Inventory manifest").
AWS_CSV_MANIFEST = {
    "sourceBucket": "amzn-s3-demo-source-bucket",
    "destinationBucket": "arn:aws:s3:::example-inventory-destination-bucket",
    "version": "2016-11-30",
    "creationTimestamp": "1514944800000",
    "fileFormat": "CSV",
    "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, "
    "StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, "
    "ObjectLockMode, ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, "
    "ChecksumAlgorithm, ObjectAccessControlList, ObjectOwner",
    "files": [
        {
            "key": "Inventory/amzn-s3-demo-source-bucket/2016-11-06T21-32Z/files/"
            "939c6d46-85a9-4ba8-87bd-9db705a579ce.csv.gz",
            "size": 2147483647,
            "MD5checksum": "f11166069f1990abeb9c97ace9cdfabc",
        }
    ],
}
#: The `fileSchema` AWS's ORC and Parquet examples give (the same fields, in the formats' notations).
AWS_ORC_SCHEMA = (
    "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,"
    "size:bigint,last_modified_date:timestamp,e_tag:string,storage_class:string,"
    "is_multipart_uploaded:boolean,replication_status:string,encryption_status:string>"
)
AWS_PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); "
    "optional binary version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; "
    "optional int64 size; optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag "
    "(UTF8); optional binary storage_class (UTF8); optional boolean is_multipart_uploaded;}"
)
FIRST = (
    "bucket",
    "key",
    "version_id",
    "is_latest",
    "is_delete_marker",
    "size",
    "last_modified_date",
    "e_tag",
)
WHEN = datetime(2026, 11, 25, 3, 4, 5, 678000, tzinfo=UTC)


def test_awss_example_manifest_parses_with_its_files_and_snake_case_columns() -> None:
    manifest = parse_manifest(json.dumps(AWS_CSV_MANIFEST), "here")
    assert manifest.source_bucket == "amzn-s3-demo-source-bucket"
    assert manifest.destination_bucket == "example-inventory-destination-bucket"  # the ARN's bucket
    assert manifest.file_format == "CSV"
    assert manifest.columns[:9] == (*FIRST, "storage_class")
    assert "object_lock_retain_until_date" in manifest.columns
    assert [(f.key, f.size, f.md5) for f in manifest.files] == [
        (AWS_CSV_MANIFEST["files"][0]["key"], 2147483647, "f11166069f1990abeb9c97ace9cdfabc")
    ]


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_the_destination_is_the_buckets_name_in_every_partition(partition: str) -> None:
    document = AWS_CSV_MANIFEST | {"destinationBucket": f"arn:{partition}:s3:::inventories"}
    assert parse_manifest(json.dumps(document), "here").destination_bucket == "inventories"


@pytest.mark.parametrize(("fmt", "schema"), [("ORC", AWS_ORC_SCHEMA), ("Parquet", AWS_PARQUET_SCHEMA)])
def test_orc_and_parquet_schemas_give_their_column_names(fmt: str, schema: str) -> None:
    assert schema_columns(fmt, schema)[:10] == (*FIRST, "storage_class", "is_multipart_uploaded")


def test_an_inventory_without_the_fields_the_run_needs_is_refused_naming_them() -> None:
    manifest = {**AWS_CSV_MANIFEST, "fileSchema": "Bucket, Key, Size"}
    with pytest.raises(InventoryInvalid, match="lacks LastModifiedDate, ETag: add them"):
        parse_manifest(json.dumps(manifest), "s3://d/m.json")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not an S3 Inventory manifest"),
        (json.dumps({k: v for k, v in AWS_CSV_MANIFEST.items() if k != "files"}), "no 'files'"),
        (json.dumps({**AWS_CSV_MANIFEST, "fileFormat": "JSON"}), "fileFormat 'JSON' is none of CSV, ORC"),
        # Each of its objects would be listed twice: every call paid, then the run aborted (exit 4).
        (
            json.dumps({**AWS_CSV_MANIFEST, "files": AWS_CSV_MANIFEST["files"] * 2}),
            "lists the data file .* once",
        ),
    ],
)
def test_what_is_not_an_inventory_manifest_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InventoryInvalid, match=reason) as raised:
        parse_manifest(text, "s3://d/m.json")
    assert raised.value.exit_code == 3
    assert str(raised.value).startswith("s3://d/m.json: ")


def csv_row(key: str, **fields: str) -> dict[str, str]:
    """A row of a CSV inventory as its text gives it: every value a string."""
    row = {
        "bucket": "b",
        "key": key,
        "size": "1234",
        "last_modified_date": "2026-11-25T03:04:05.678Z",
        "e_tag": "0123abcd",
    }
    return row | fields


def test_a_csv_row_is_the_object_a_listing_shows() -> None:
    row = csv_row("photos%2Fa+b%2Bc%25d+%C3%A9.jpg")
    assert listed_object(row, url_encoded=True) == ListedObject(
        "photos/a b+c%d é.jpg", "0123abcd", 1234, WHEN
    )


def test_a_quoted_etag_is_read_bare_as_the_listing_gives_it() -> None:
    row = csv_row("a.jpg", e_tag='"0123abcd-2"')
    assert listed_object(row, url_encoded=True) == ListedObject("a.jpg", "0123abcd-2", 1234, WHEN)


@pytest.mark.parametrize(
    ("is_latest", "is_delete_marker", "counts"),
    [("true", "false", True), ("false", "false", False), ("true", "true", False), ("false", "true", False)],
)
def test_only_current_versions_that_are_not_delete_markers_count(
    is_latest: str, is_delete_marker: str, counts: bool
) -> None:
    row = csv_row("a.jpg", version_id="v1", is_latest=is_latest, is_delete_marker=is_delete_marker)
    if is_delete_marker == "true":  # a delete marker has no size nor ETag
        row |= {"size": "", "e_tag": ""}
    assert (listed_object(row, url_encoded=True) is not None) is counts


def test_typed_orc_and_parquet_rows_are_read_as_they_are() -> None:
    naive = WHEN.replace(tzinfo=None)  # ORC's timestamp has no zone: UTC
    row = {"key": "a b+c%d.jpg", "size": 1234, "last_modified_date": naive, "e_tag": "0123abcd"}
    expected = ListedObject("a b+c%d.jpg", "0123abcd", 1234, WHEN)
    assert listed_object(row, url_encoded=False) == expected
    assert listed_object(row | {"is_latest": False}, url_encoded=False) is None
    assert listed_object(row | {"is_latest": True, "is_delete_marker": True}, url_encoded=False) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"size": ""},
        {"size": "12a"},
        {"last_modified_date": "yesterday"},
        {"key": "caf%E9.jpg"},
        {"e_tag": ""},
    ],
    ids=["no-size", "bad-size", "bad-time", "latin-1-key", "no-etag"],
)
def test_a_current_row_the_run_cannot_use_is_refused_not_skipped(fields: dict[str, str]) -> None:
    with pytest.raises(InventoryInvalid, match="a row the inventory cannot hold") as raised:
        listed_object(csv_row("a.jpg") | fields, url_encoded=True)
    assert raised.value.exit_code == 3


def test_awss_key_encoding_is_html_form_encoding() -> None:
    assert encode_key("photos/a b+c%d é.jpg") == "photos%2Fa+b%2Bc%25d+%C3%A9.jpg"
    assert encode_key("a-b_c.d*e~f") == "a-b_c.d*e%7Ef"


@given(st.text(min_size=1, max_size=60).filter(lambda key: "\x00" not in key))
def test_every_key_survives_a_csv_inventory(key: str) -> None:
    encoded = encode_key(key)
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.*+%")
    obj = listed_object(csv_row(encoded), url_encoded=True)
    assert obj is not None
    assert obj.key == key
