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

Face users (`user_search`): a folder of reference photos is one user, its `UserId` the folder's name
escaped the same way (`user_id`; at most 128 characters, no digest form: a longer name is refused), and
each reference photo's face is indexed with `reference_image_id`: `::ref:` and a SHA-256 of the photo's
bucket, key and ETag, which no key's id ever equals (`::` starts only the digest form), so the
sync of the indexed images (`batch.faces.sync`) leaves these faces alone and a changed photo gets a new id.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "DIGEST_PREFIX",
    "MAX_LENGTH",
    "MAX_USER_ID_LENGTH",
    "REFERENCE_PREFIX",
    "external_image_id",
    "is_digest_id",
    "is_external_image_id",
    "key_of",
    "reference_image_id",
    "user_id",
]

MAX_LENGTH = 255
DIGEST_PREFIX = "::sha256:"
#: `UserId` in the botocore model: 1-128 characters of `[a-zA-Z0-9_.\-:]+`.
MAX_USER_ID_LENGTH = 128
REFERENCE_PREFIX = "::ref:"
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_PATTERN = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
_ESCAPED = re.compile(r"(?:[a-zA-Z0-9_.\-]|:[0-9A-F]{2})+")
_DIGEST = re.compile(re.escape(DIGEST_PREFIX) + r"[0-9a-f]{64}")


def _escaped(text: str) -> str:
    return "".join(chr(b) if b in _KEPT else f":{b:02X}" for b in text.encode("utf-8"))


def external_image_id(key: str) -> str:
    """The ExternalImageId of an S3 key: escaped when that fits in 255 characters, else a digest."""
    if not key:
        raise ValueError("an S3 key has at least one character")
    escaped = _escaped(key)
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


def user_id(name: str) -> str:
    """The UserId of a folder of reference photos: its name escaped as `external_image_id` escapes a
    key (`key_of` decodes it). ValueError when the name is empty or the escaped form is over 128."""
    if not name:
        raise ValueError("a user's folder name has at least one character")
    escaped = _escaped(name)
    if len(escaped) > MAX_USER_ID_LENGTH:
        raise ValueError(f"{name!r} escaped is {len(escaped)} characters: a UserId has at most 128")
    return escaped


def reference_image_id(bucket: str, key: str, etag: str) -> str:
    """The ExternalImageId of one version of a user's reference photo (see the module docstring)."""
    digest = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()
    return REFERENCE_PREFIX + digest
