"""The job's only door to S3: list a prefix page by page, read an object's head or whole body, put files.

Reads of an input object are pinned to its listed ETag (`If-Match`: a changed object fails with 412),
and by version once the header read has returned one (a bucket that keeps versions): every byte read
and every answer of Rekognition is about the listed version, or the read fails.

Clients come from boto3, so the endpoint comes from botocore's standard lookup
(`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile): no code path here names an endpoint.
botocore retries S3 calls itself (standard mode, 5 attempts): nothing else retries them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from batch.core.errors import InputUnreachable, OutputUnwritable
from batch.core.image_header import HeaderFault, HeaderIncomplete, ImageHeader, probe, sniff_format
from batch.core.redaction import one_line
from batch.core.selection import ListedObject

logger = logging.getLogger(__name__)

#: The first ranged read of an object's head: enough for almost every JPEG and PNG header.
HEAD_BYTES = 64 * 1024
#: The longest head read when the header runs past the first range (then the header is broken).
MAX_HEAD_BYTES = 1024 * 1024
PAGE_SIZE = 1000
#: PUTs of one create-only write that S3 may answer 409 (a concurrent conditional write) before giving up.
CONFLICT_RETRIES = 5


def s3_client(max_pool_connections: int = 10, session: Any = None) -> Any:
    """A boto3 S3 client with explicit retry settings (botocore's default changed in 1.44), made from
    `session` (an `s3_session()`; a new one if None).

    Checksums only where they protect something: whole-object reads (`ChecksumMode`) and writes (their
    SHA-256, `put_file`), not the ranged header probes, which no full-object checksum can cover and
    which botocore's default ("when_supported") would still run the checksum machinery for. See
    docs/design/worker-runtime.md.
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 5},
        max_pool_connections=max_pool_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return (session or s3_session()).client("s3", config=config)


def s3_session() -> Any:
    """A boto3 session whose S3 clients parse timestamps with `parse_timestamp`. Clients made from one
    session share the service models it read once."""
    session = botocore.session.get_session()
    # The AWS CLI's way to choose how responses' timestamps are parsed (a botocore component).
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return boto3.session.Session(botocore_session=session)


def parse_timestamp(value: Any) -> datetime:
    """A response's timestamp as an aware datetime, as botocore's own parser gives it.

    The two forms S3 sends, ISO 8601 in XML bodies (every key of a listing) and RFC 7231 dates in
    headers (Last-Modified), are parsed without dateutil's slow general-purpose parser. Anything else,
    and any value read without a time zone, goes to botocore's. See docs/design/worker-runtime.md.
    """
    if isinstance(value, str):
        parsed: datetime | None = None
        with contextlib.suppress(ValueError, TypeError):
            parsed = datetime.fromisoformat(value) if value[:1].isdigit() else parsedate_to_datetime(value)
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return botocore.utils.parse_timestamp(value)


def list_pages(client: Any, bucket: str, prefix: str) -> Iterator[list[ListedObject]]:
    """ListObjectsV2 page by page (1,000 keys each), as they arrive."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": PAGE_SIZE}):
        yield [
            ListedObject(item["Key"], item["ETag"].strip('"'), item["Size"], item["LastModified"])
            for item in page.get("Contents", [])
        ]


#: S3's error code for the HTTP status of an answer without a body (HeadBucket's errors have none).
_CODES_OF_STATUS = {"301": "PermanentRedirect", "403": "AccessDenied", "404": "NoSuchBucket"}
#: What to do about the bucket errors a first run meets most.
_BUCKET_HELP = {
    "NoSuchBucket": "no bucket of that name: check the name, or create it",
    "AccessDenied": "the credentials may not use this bucket: check the IAM policy and the bucket policy",
    "PermanentRedirect": "the bucket is in another region than the client's",
}


def check_readable(client: Any, bucket: str, prefix: str) -> None:
    """Raise InputUnreachable with a one-line reason (S3's code, and what to check) when the input
    prefix cannot be listed."""
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as exc:
        raise InputUnreachable(
            f"run.input: cannot list s3://{bucket}/{prefix}: {_bucket_error(exc)}"
        ) from None


def bucket_region(client: Any, bucket: str) -> str | None:
    """The region `bucket` is in (GetBucketLocation: no constraint is us-east-1, "EU" eu-west-1), or
    None when S3 will not say (denied, unreachable)."""
    try:
        constraint = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except (ClientError, BotoCoreError):
        return None
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)


def check_writable(client: Any, bucket: str) -> None:
    """Raise OutputUnwritable with a one-line reason (S3's code, and what to check) when the output
    bucket does not exist or cannot be reached."""
    try:
        client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise OutputUnwritable(f"run.output: cannot write to s3://{bucket}: {_bucket_error(exc)}") from None


def _bucket_error(exc: Exception) -> str:
    """S3's error code for a bucket-level request (the same on both sides: HeadBucket's 404 is
    NoSuchBucket as ListObjectsV2's is), with what to check; a connection error in one line."""
    if not isinstance(exc, ClientError):
        return one_line(str(exc))
    code = str(exc.response.get("Error", {}).get("Code", "error"))
    code = _CODES_OF_STATUS.get(code, code)
    return f"{code} ({_BUCKET_HELP[code]})" if code in _BUCKET_HELP else code


def read_header(client: Any, bucket: str, obj: ListedObject) -> tuple[ImageHeader, ListedObject]:
    """Probe an image's header from a ranged GET of its head, reading more only if the header needs it;
    and the object pinned to the version read (`ListedObject.version`) when the bucket keeps versions.

    A zero-byte object is not read (a range of nothing is an error to S3).
    """
    if obj.size == 0:
        return probe(b"", complete=True), obj
    length = HEAD_BYTES
    while True:
        head, obj = read_range(client, bucket, obj, length)
        try:
            return probe(head, complete=len(head) >= obj.size), obj
        except HeaderIncomplete:
            if length >= MAX_HEAD_BYTES:
                problem = f"no complete header in the first {length} bytes"
                return ImageHeader.unreadable(sniff_format(head), HeaderFault.TOO_LONG, problem), obj
            length *= 4


def read_range(client: Any, bucket: str, obj: ListedObject, length: int) -> tuple[bytes, ListedObject]:
    """The first `length` bytes of the object, pinned to the listed ETag (a changed object fails), and
    the object pinned to the version they came from, if the bucket keeps versions."""
    response = client.get_object(
        Bucket=bucket, Key=obj.key, Range=f"bytes=0-{length - 1}", IfMatch=obj.etag, **_version_of(obj)
    )
    version = response.get("VersionId")
    if obj.version is None and version not in (None, "null"):
        obj = dataclasses.replace(obj, version=version)
    return response["Body"].read(), obj


def _version_of(obj: ListedObject) -> dict[str, str]:
    """GetObject's `VersionId` for an object pinned to a version (needs `s3:GetObjectVersion`)."""
    return {"VersionId": obj.version} if obj.version else {}


def unchanged(client: Any, bucket: str, obj: ListedObject) -> bool:
    """Is the object still the listed version? One HeadObject with `If-Match`: False when S3 answers
    412 (overwritten since) or 404 (deleted); other errors are raised."""
    # The entity tag quoted, as RFC 9110 writes it (listings give it bare): moto's HeadObject compares
    # the header with the quoted tag as it is; S3 takes either form.
    quoted = obj.etag if obj.etag.startswith('"') else f'"{obj.etag}"'
    try:
        client.head_object(Bucket=bucket, Key=obj.key, IfMatch=quoted)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 412):
            return False
        raise
    return True


def head(client: Any, bucket: str, key: str) -> ListedObject | None:
    """One object's current version as a listing would show it (HeadObject), or None if there is no
    such key. Other errors (denied, no bucket) are raised."""
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    etag = response["ETag"].strip('"')
    return ListedObject(key, etag, response["ContentLength"], response["LastModified"])


def read_object(client: Any, bucket: str, obj: ListedObject) -> bytes:
    """The whole object, pinned to the listed ETag (and to its version, when known). Only for objects
    whose listed size was checked first."""
    response = client.get_object(
        Bucket=bucket, Key=obj.key, IfMatch=obj.etag, ChecksumMode="ENABLED", **_version_of(obj)
    )
    return response["Body"].read()


def encryption_arguments(sse: str, kms_key_id: str) -> dict[str, str]:
    """PutObject's server-side encryption parameters for `output.sse` and `output.kms_key_id`
    (`batch.config.model.OutputConfig`); none for "" (the bucket's default encryption applies)."""
    arguments = {"ServerSideEncryption": sse} if sse else {}
    if kms_key_id:
        arguments["SSEKMSKeyId"] = kms_key_id
    return arguments


def put_file(
    client: Any,
    bucket: str,
    key: str,
    body: bytes,
    encryption: Mapping[str, str] | None = None,
    **conditions: str,
) -> None:
    """One PUT of a whole file with its SHA-256, so S3 refuses a body that arrived damaged.
    `encryption` comes from `encryption_arguments`; `conditions` are PutObject's conditional-write
    parameters (e.g. `IfNoneMatch="*"`)."""
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
    client.put_object(
        Bucket=bucket, Key=key, Body=body, ChecksumSHA256=checksum, **(encryption or {}), **conditions
    )


def put_local_file(
    client: Any, bucket: str, key: str, path: Path, encryption: Mapping[str, str] | None = None
) -> None:
    """`put_file` for a file on disk too large to hold in memory: its SHA-256 read in one pass, then
    the file streamed in one PUT (up to S3's 5 GB for a single PUT)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        handle.seek(0)
        checksum = base64.b64encode(digest.digest()).decode()
        client.put_object(Bucket=bucket, Key=key, Body=handle, ChecksumSHA256=checksum, **(encryption or {}))


def create_file(
    client: Any, bucket: str, key: str, body: bytes, encryption: Mapping[str, str] | None = None
) -> bool:
    """Like `put_file`, but only if the key does not exist yet (`If-None-Match: *`); False if it does.

    S3 answers 412 when the object exists, and 409 ConditionalRequestConflict when another conditional
    write of the key is in progress ("retry the upload"): then the PUT is sent again until one answer
    is final.
    """
    for _ in range(CONFLICT_RETRIES):
        try:
            put_file(client, bucket, key, body, encryption, IfNoneMatch="*")
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412:
                return False
            if status != 409:
                raise
        else:
            return True
    raise OutputUnwritable(f"s3://{bucket}/{key}: conditional write kept conflicting")


def get_file(client: Any, bucket: str, key: str) -> bytes | None:
    """The whole object, or None if there is no such key."""
    try:
        return client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def download(client: Any, bucket: str, key: str, out: BinaryIO) -> str:
    """The whole object written to `out` a chunk at a time (never all in memory); its MD5, hex (the
    checksum S3 Inventory's manifest gives each data file)."""
    digest = hashlib.md5(usedforsecurity=False)
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    while chunk := body.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def list_files(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int, datetime]]:
    """(key, size, last modified) of every object under the prefix, page by page."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"], item["Size"], item["LastModified"]


def list_folders(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """The keys' "folders" right under the prefix (ListObjectsV2's common prefixes, delimiter `/`):
    a request per 1,000 folders, whatever they hold."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for item in page.get("CommonPrefixes", []):
            yield item["Prefix"]


def delete_files(client: Any, bucket: str, keys: Sequence[str]) -> None:
    """Delete the keys, 1,000 per request (DeleteObjects' limit); raise if any could not be deleted."""
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        response = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
        if response.get("Errors"):
            error = response["Errors"][0]
            raise OutputUnwritable(f"cannot delete s3://{bucket}/{error['Key']}: {error['Code']}")
