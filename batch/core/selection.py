"""Which listed S3 objects are images to analyse. Pure."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime

from batch.config.model import InputConfig

#: Names of the images to analyse: what Rekognition reads (JPEG, PNG) and what the job can convert for it
#: (WebP, GIF, TIFF, BMP; `rekognition.convert_to_jpeg`). The name only selects: the format is told by the
#: bytes (`batch.core.image_header`), so a GIF named .jpg is converted and a text file named .png rejected.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ListedObject:
    """One object from ListObjectsV2."""

    key: str
    etag: str
    size: int
    last_modified: datetime
    #: The VersionId of the listed ETag, once a read pinned to it returned one (a bucket that keeps
    #: versions; `batch.aws.s3.read_header`): later reads and Rekognition's read it by version. None:
    #: not known, or a bucket without versions (S3's "null" version can be overwritten in place).
    version: str | None = None


def is_selected(obj: ListedObject, prefix: str, input_filter: InputConfig) -> bool:
    """Is this listed object an image the run is about (zero-byte ones included: they get a row)?

    "Folder" keys (ending in '/') are not; nor keys outside the prefix (the listing never returns
    them, but a key is never trusted to be under the prefix just because it was listed).
    """
    if not obj.key.startswith(prefix) or obj.key.endswith("/"):
        return False
    if not obj.key.lower().endswith(IMAGE_SUFFIXES):
        return False
    relative = obj.key[len(prefix) :]
    if not any(fnmatch.fnmatchcase(relative, pattern) for pattern in input_filter.include):
        return False
    return not any(fnmatch.fnmatchcase(relative, pattern) for pattern in input_filter.exclude)
