"""Where an image's bytes come from: `Image.Bytes` or `Image.S3Object`, with Rekognition's size limits.

S3 objects are fetched on every call, as Rekognition does, but through a cache keyed by (bucket, key, version)
that revalidates with a conditional GET (`If-None-Match: <etag>`; the server answers 304). A changed object
therefore gives a new answer and a deleted one gives InvalidS3ObjectException, exactly as without the cache.
The revalidation costs one request to the S3 server per call, which caps S3Object throughput;
`revalidate_after` > 0 trusts a cached object for that many seconds instead (inexact: an object changed
within the window is answered from the old bytes), for benchmarks that need more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local_stack.errors import ServiceError, invalid_parameter
from local_stack.vision import content_digest

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024  # Image.Bytes: the botocore model's ImageBlob max (5242880)
MAX_S3_OBJECT = 15 * 1024 * 1024  # "Maximum image size stored as an Amazon S3 object is limited to 15 MB."


@dataclass(frozen=True)
class ImageInput:
    """The bytes of one request image and where they came from (for the call log)."""

    data: bytes
    source: str  # "bytes" | "s3"
    bucket: str | None = None
    name: str | None = None

    @property
    def digest(self) -> str:
        return content_digest(self.data)


def _invalid_s3_object() -> ServiceError:
    return ServiceError(
        "InvalidS3ObjectException",
        "Unable to get object metadata from S3. Check object key, region and/or access permissions.",
    )


class S3ObjectCache:
    """Object bytes by (bucket, key, version), revalidated on every use; bounded by total bytes (LRU)."""

    def __init__(
        self, s3_client: Any, max_bytes: int = 256 * 1024 * 1024, revalidate_after: float = 0.0
    ) -> None:
        self._s3 = s3_client
        self._revalidate_after = revalidate_after
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, str | None], tuple[str, bytes, float]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def fetch(self, bucket: str, key: str, version: str | None = None) -> bytes:
        ident = (bucket, key, version)
        with self._lock:
            cached = self._entries.get(ident)
        if cached and self._revalidate_after and time.monotonic() - cached[2] < self._revalidate_after:
            return cached[1]
        kwargs: dict[str, str] = {"Bucket": bucket, "Key": key}
        if version:
            kwargs["VersionId"] = version
        if cached:
            kwargs["IfNoneMatch"] = cached[0]
        try:
            response = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if cached and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 304:
                with self._lock:
                    if ident in self._entries:
                        self._entries[ident] = (cached[0], cached[1], time.monotonic())
                        self._entries.move_to_end(ident)
                return cached[1]
            log.debug("S3 get_object %s/%s failed: %s", bucket, key, exc)
            self._forget(ident)
            raise _invalid_s3_object() from exc
        except BotoCoreError as exc:
            raise _invalid_s3_object() from exc
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > MAX_S3_OBJECT:
                raise ServiceError("ImageTooLargeException", "Image size is too large.")
            data = body.read()
        finally:
            body.close()
        self._store(ident, response.get("ETag", ""), data)
        return data

    def _forget(self, ident: tuple[str, str, str | None]) -> None:
        with self._lock:
            old = self._entries.pop(ident, None)
            if old:
                self._size -= len(old[1])

    def _store(self, ident: tuple[str, str, str | None], etag: str, data: bytes) -> None:
        with self._lock:
            old = self._entries.pop(ident, None)
            if old:
                self._size -= len(old[1])
            if not etag or len(data) > self._max_bytes:
                return
            self._entries[ident] = (etag, data, time.monotonic())
            self._size += len(data)
            while self._size > self._max_bytes:
                _, (_, dropped, _) = self._entries.popitem(last=False)
                self._size -= len(dropped)


def resolve_image(image: dict[str, Any], s3: S3ObjectCache | None) -> ImageInput:
    """The request's `Image` member (already shape-validated, Bytes already base64-decoded) -> its bytes."""
    if "Bytes" in image and "S3Object" in image:
        raise invalid_parameter("Image must have exactly one of Bytes or S3Object.")
    if "Bytes" in image:
        data = image["Bytes"]
        if len(data) > MAX_BYTES:
            raise ServiceError("ImageTooLargeException", "Image size is too large.")
        return ImageInput(data, "bytes")
    obj = image.get("S3Object")
    if not obj:
        raise invalid_parameter("Image must have one of Bytes or S3Object.")
    bucket, name = obj.get("Bucket"), obj.get("Name")
    if not bucket or not name:
        raise invalid_parameter("Image.S3Object needs Bucket and Name.")
    if s3 is None:
        raise _invalid_s3_object()
    return ImageInput(s3.fetch(bucket, name, obj.get("Version")), "s3", bucket, name)
