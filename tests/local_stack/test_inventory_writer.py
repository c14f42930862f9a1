"""The local stack's S3 Inventory writer against AWS's documented layout, and the job's inventory reader
against the writer: an inventory in each format yields what the listing does (in-process moto)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from batch.aws.inventory import inventory_objects, read_manifest
from batch.aws.s3 import list_pages
from batch.config.model import RunConfig
from batch.core.errors import ConfigError, InputUnreachable
from batch.core.inventory import InventoryInvalid
from batch.run.plan import inventory_manifest, selected_objects
from local_stack.inventory import write_inventory

SOURCE, DEST = "inv-source", "inv-dest"
KEYS = ("p/a.jpg", "p/with space+plus%pct é~.jpg", "p/deep/zero.png", "outside/b.png")
WHEN = datetime(2026, 11, 25, 3, 4, tzinfo=UTC)
FORMATS = ("CSV", "ORC", "Parquet")


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=SOURCE)
        client.create_bucket(Bucket=DEST)
        for key in KEYS:
            client.put_object(Bucket=SOURCE, Key=key, Body=b"" if "zero" in key else key.encode())
        yield client


def manifest_at(s3: Any, url: str) -> tuple[str, dict[str, Any]]:
    key = url.removeprefix(f"s3://{DEST}/")
    return key, json.loads(s3.get_object(Bucket=DEST, Key=key)["Body"].read())


def body(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=DEST, Key=key)["Body"].read())


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_report_is_laid_out_as_aws_documents(s3: Any, fmt: str) -> None:
    url = write_inventory(
        s3, SOURCE, f"s3://{DEST}/inv/", fmt, config_id="nightly", now=WHEN, rows_per_file=3
    )
    key, manifest = manifest_at(s3, url)
    assert key == f"inv/{SOURCE}/nightly/2026-11-25T03-04Z/manifest.json"
    checksum = body(s3, key.replace("manifest.json", "manifest.checksum")).decode()
    assert checksum == hashlib.md5(body(s3, key), usedforsecurity=False).hexdigest()
    assert manifest["sourceBucket"] == SOURCE
    assert manifest["destinationBucket"] == f"arn:aws:s3:::{DEST}"
    assert manifest["fileFormat"] == fmt
    assert manifest["creationTimestamp"] == str(int(WHEN.timestamp() * 1000))
    suffix = {"CSV": r"\.csv\.gz", "ORC": r"\.orc", "Parquet": r"\.parquet"}[fmt]
    assert len(manifest["files"]) == 2  # four objects, three rows per file
    for file in manifest["files"]:
        assert re.fullmatch(rf"inv/{SOURCE}/nightly/data/[0-9a-f-]{{36}}{suffix}", file["key"])
        data = body(s3, file["key"])
        assert (file["size"], file["MD5checksum"]) == (
            len(data),
            hashlib.md5(data, usedforsecurity=False).hexdigest(),
        )


def test_a_csv_report_is_gzipped_quoted_headerless_with_url_encoded_keys(s3: Any) -> None:
    _, manifest = manifest_at(s3, write_inventory(s3, SOURCE, f"s3://{DEST}/", "CSV"))
    assert manifest["fileSchema"] == "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass"
    text = gzip.decompress(body(s3, manifest["files"][0]["key"])).decode()
    assert all(line.startswith('"') and line.endswith('"') for line in text.splitlines())
    rows = list(csv.reader(io.StringIO(text)))
    listed = s3.list_objects_v2(Bucket=SOURCE)["Contents"]
    assert rows == [
        [
            SOURCE,
            {"p/with space+plus%pct é~.jpg": "p%2Fwith+space%2Bplus%25pct+%C3%A9%7E.jpg"}.get(
                item["Key"], item["Key"].replace("/", "%2F")
            ),
            str(item["Size"]),
            item["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            item["ETag"].strip('"'),
            "STANDARD",
        ]
        for item in listed
    ]


@pytest.mark.parametrize("fmt", ["ORC", "Parquet"])
def test_orc_and_parquet_reports_have_awss_snake_case_typed_columns(s3: Any, fmt: str) -> None:
    _, manifest = manifest_at(s3, write_inventory(s3, SOURCE, f"s3://{DEST}/", fmt, all_versions=True))
    data = pa.BufferReader(body(s3, manifest["files"][0]["key"]))
    table = pa_orc.read_table(data) if fmt == "ORC" else pq.read_table(data)
    assert table.schema == pa.schema(
        [
            ("bucket", pa.string()),
            ("key", pa.string()),
            ("version_id", pa.string()),
            ("is_latest", pa.bool_()),
            ("is_delete_marker", pa.bool_()),
            ("size", pa.int64()),
            ("last_modified_date", pa.timestamp("ms" if fmt == "Parquet" else "ns", tz="UTC")),
            ("e_tag", pa.string()),
            ("storage_class", pa.string()),
        ]
    )
    assert sorted(table.column("key").to_pylist()) == sorted(KEYS)  # keys as they are
    expected = {
        "ORC": "struct<bucket:string,key:string,version_id:string,is_latest:boolean,",
        "Parquet": "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); ",
    }
    assert manifest["fileSchema"].startswith(expected[fmt])


def listing(s3: Any) -> list[Any]:
    return sorted((obj for page in list_pages(s3, SOURCE, "") for obj in page), key=lambda o: o.key)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_inventory_yields_what_the_listing_does(s3: Any, fmt: str) -> None:
    url = write_inventory(s3, SOURCE, f"s3://{DEST}/inv/", fmt, rows_per_file=2)
    manifest = read_manifest(s3, DEST, url.removeprefix(f"s3://{DEST}/"))
    assert sorted(inventory_objects(s3, manifest), key=lambda o: o.key) == listing(s3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_inventory_of_all_versions_yields_only_current_objects(s3: Any, fmt: str) -> None:
    s3.put_bucket_versioning(Bucket=SOURCE, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=SOURCE, Key="p/a.jpg", Body=b"a newer version")
    s3.delete_object(Bucket=SOURCE, Key="p/deep/zero.png")  # a delete marker on top
    url = write_inventory(s3, SOURCE, f"s3://{DEST}/inv/", fmt, all_versions=True)
    manifest = read_manifest(s3, DEST, url.removeprefix(f"s3://{DEST}/"))
    assert "is_delete_marker" in manifest.columns
    assert sorted(inventory_objects(s3, manifest), key=lambda o: o.key) == listing(s3)


def test_a_data_file_that_is_not_the_manifests_is_refused(s3: Any) -> None:
    url = write_inventory(s3, SOURCE, f"s3://{DEST}/inv/", "CSV")
    manifest = read_manifest(s3, DEST, url.removeprefix(f"s3://{DEST}/"))
    s3.put_object(Bucket=DEST, Key=manifest.files[0].key, Body=gzip.compress(b'"x","y"\n'))
    with pytest.raises(InventoryInvalid, match=r"MD5 \w+ is not the manifest's"):
        list(inventory_objects(s3, manifest))


def test_the_run_refuses_an_inventory_of_another_bucket_and_a_missing_manifest(s3: Any) -> None:
    url = write_inventory(s3, SOURCE, f"s3://{DEST}/inv/", "CSV")
    other = RunConfig(input="s3://another-bucket/p/", output="out", inventory=url)
    with pytest.raises(
        ConfigError, match=f"is an inventory of bucket '{SOURCE}', not of the input's"
    ) as raised:
        inventory_manifest(other, s3)
    assert raised.value.exit_code == 2
    missing = RunConfig(input=f"s3://{SOURCE}/p/", output="out", inventory=f"s3://{DEST}/no/manifest.json")
    with pytest.raises(InputUnreachable, match=r"no such manifest \(NoSuchKey\)") as unreachable:
        inventory_manifest(missing, s3)
    assert unreachable.value.exit_code == 3
    ours = RunConfig(input=f"s3://{SOURCE}/p/", output="out", inventory=url)
    assert [obj.key for obj in selected_objects(ours, s3)] == [
        "p/a.jpg",
        "p/deep/zero.png",
        "p/with space+plus%pct é~.jpg",
    ]
