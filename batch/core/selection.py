"""Which listed S3 objects are images to analyse, and how they are grouped into Dask tasks. Pure."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from batch.config.model import InputConfig

#: Names of the images to analyse: what Rekognition reads (JPEG, PNG) and what the job can convert for it
#: (WebP, GIF, TIFF, BMP; `rekognition.convert_to_jpeg`). The name only selects: the format is told by
#: the bytes (`batch.core.image_header`), so a GIF named .jpg is converted and a text file named .png rejected.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ListedObject:
    """One object from ListObjectsV2."""

    key: str
    etag: str
    size: int
    last_modified: datetime


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


def batched(
    objects: Iterable[ListedObject], size: int | Callable[[], int], limit: int = 0
) -> Iterator[list[ListedObject]]:
    """Group a stream of objects into lists of `size`, stopping after `limit` objects (0: no limit).

    `size` may be a function, asked again for each batch (the driver grows batches with the planned
    concurrency). Consumes the stream lazily, so a listing of millions of keys is never held whole.
    """
    size_of = size if callable(size) else lambda: size
    batch: list[ListedObject] = []
    target = size_of()
    for taken, obj in enumerate(objects):
        if limit and taken >= limit:
            break
        batch.append(obj)
        if len(batch) >= target:
            yield batch
            batch = []
            target = size_of()
    if batch:
        yield batch
