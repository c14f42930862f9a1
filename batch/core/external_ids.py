"""S3 key <-> Rekognition `ExternalImageId`, reversibly when it fits. Pure: no I/O.

`ExternalImageId` must match `[a-zA-Z0-9_.\\-:]+` and be 1-255 characters (botocore model, shape
`ExternalImageId`); S3 keys are up to 1,024 bytes of any UTF-8. So:

* Escaped form, when it fits in 255 characters: letters, digits, `_`, `.` and `-` stay; every other
  byte of the key's UTF-8 becomes `:` and two upper-case hex digits (`/` -> `:2F`, ` ` -> `:20`,
  `:` -> `:3A`). A `:` is therefore always followed by two hex digits, and `key_of` decodes it back.
* Digest form otherwise: `::sha256:` and the key's SHA-256 in hex (73 characters). `::` never occurs in
  the escaped form, so the two never collide. The digest cannot be decoded: the `indexed_faces` table
  (`key`, `external_image_id`) is the lookup.

Use `external_image_id` for every IndexFaces call and `key_of` to tell which key a listed face came from.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "DIGEST_PREFIX",
    "MAX_LENGTH",
    "external_image_id",
    "is_digest_id",
    "is_external_image_id",
    "key_of",
]

MAX_LENGTH = 255
DIGEST_PREFIX = "::sha256:"
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_PATTERN = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
_ESCAPED = re.compile(r"(?:[a-zA-Z0-9_.\-]|:[0-9A-F]{2})+")
_DIGEST = re.compile(re.escape(DIGEST_PREFIX) + r"[0-9a-f]{64}")


def external_image_id(key: str) -> str:
    """The ExternalImageId of an S3 key: escaped when that fits in 255 characters, else a digest."""
    if not key:
        raise ValueError("an S3 key has at least one character")
    escaped = "".join(chr(b) if b in _KEPT else f":{b:02X}" for b in key.encode("utf-8"))
    if len(escaped) <= MAX_LENGTH:
        return escaped
    return DIGEST_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_of(external_id: str) -> str | None:
    """The key an escaped ExternalImageId stands for; None for the digest form or an id this module
    did not make (look those up in `indexed_faces`)."""
    if not _ESCAPED.fullmatch(external_id):
        return None
    out = bytearray()
    index = 0
    while index < len(external_id):
        if external_id[index] == ":":
            out.append(int(external_id[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(ord(external_id[index]))
            index += 1
    try:
        key = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Only the canonical escaping decodes: ":41" (an escaped "A") is not an id this module makes.
    return key if external_image_id(key) == external_id else None


def is_external_image_id(value: str) -> bool:
    """Whether Rekognition accepts `value` as an ExternalImageId."""
    return bool(_PATTERN.fullmatch(value))


def is_digest_id(external_id: str) -> bool:
    """Whether the id is the digest form (its key is found only through `indexed_faces`)."""
    return bool(_DIGEST.fullmatch(external_id))
