"""An inventory's rows selected a record batch at a time, in Arrow, with no Python work per row. Pure.

`current_objects` is `batch.core.inventory.listed_object` over a whole batch and `selected` is
`batch.core.selection.is_selected` over its keys, with the same results. Where a batch holds what the
vectorised form does not decide the same way for sure (a null, a size or time Arrow does not parse,
a key not valid UTF-8 once decoded, a pattern with '[...]'), the caller reads that batch with the
per-row functions instead (`None` here), so odd rows keep their exact semantics and error messages.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.config.model import InputConfig
from batch.core.selection import IMAGE_SUFFIXES, ListedObject

#: The objects' columns, as the out-of-core sort takes them (`ListedObject`'s fields).
OBJECTS = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("etag", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("last_modified", pa.timestamp("us", tz="UTC")),
        pa.field("version", pa.string()),
    ]
)
#: The times a CSV inventory holds ("2026-11-25T03:04:05.678Z", year 1 to 9999): Arrow parses these
#: as `datetime.fromisoformat` does; any other text goes to the per-row code.
_AWS_TIME = r"^([1-9]\d{3}|0[1-9]\d\d|00[1-9]\d|000[1-9])-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$"
_HEX = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def objects_batch(objects: list[ListedObject]) -> pa.RecordBatch:
    """`objects` as a record batch of `OBJECTS`."""
    columns = [[getattr(obj, field.name) for obj in objects] for field in OBJECTS]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, OBJECTS, strict=True)], schema=OBJECTS
    )


def current_objects(batch: pa.RecordBatch, *, url_encoded: bool) -> pa.RecordBatch | None:
    """The batch's current objects (not noncurrent versions, not delete markers) in `OBJECTS`'
    schema; None when a current row is one the vectorised form does not read for sure."""
    names = [name.lower() for name in batch.schema.names]
    table = batch.rename_columns(names)
    latest = _flag(table, "is_latest", default=True)
    marker = _flag(table, "is_delete_marker", default=False)
    current = table.filter(pc.and_(latest, pc.invert(marker)))
    if any(current.column(name).null_count for name in ("key", "size", "last_modified_date", "e_tag")):
        return None
    try:
        keys = current.column("key").cast(pa.string())
        size = current.column("size").cast(pa.int64())
        modified = _timestamps(current.column("last_modified_date"))
        etags = pc.utf8_trim(current.column("e_tag").cast(pa.string()), characters='"')
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if url_encoded:
        decoded = url_decoded(keys)
        if decoded is None:
            return None
        keys = decoded
    if pc.any(pc.or_(pc.equal(keys, ""), pc.equal(etags, ""))).as_py():
        return None
    version = pa.nulls(len(keys), pa.string())
    return pa.RecordBatch.from_arrays([keys, etags, size, modified, version], schema=OBJECTS)


def _flag(table: pa.RecordBatch, name: str, *, default: bool) -> pa.Array:
    """A true/false column as `batch.core.inventory._true` reads it (True, or the text "true" in any
    ASCII case; a null is false); `default` for every row when the column is absent."""
    if name not in table.schema.names:
        return pa.array(np.full(table.num_rows, default))
    column = table.column(name)
    if pa.types.is_boolean(column.type):
        return pc.fill_null(column, False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.fill_null(pc.equal(pc.ascii_lower(column), "true"), False)
    return pa.array(np.zeros(table.num_rows, dtype=bool))


def _timestamps(column: pa.Array) -> pa.Array:
    """Aware UTC times from ISO 8601 text with a zone, or from a timestamp (naive: UTC)."""
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return column.cast(pa.timestamp("us", tz="UTC"))
    text = column.cast(pa.string())
    if not pc.all(pc.match_substring_regex(text, _AWS_TIME)).as_py():
        raise pa.ArrowInvalid("not the times AWS writes")  # the per-row code decides the others
    return pc.cast(pc.replace_substring(text, "Z", ""), pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))


def url_decoded(keys: pa.Array) -> pa.Array | None:
    """`urllib.parse.unquote_plus(key, errors="strict")` over the whole column, on its bytes: '+' is a
    space, '%XX' a byte; None when a decoded key is not valid UTF-8 (the per-row code refuses it)."""
    keys = keys.cast(pa.large_string())
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)[keys.offset : keys.offset + len(keys) + 1]
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].copy()
    offsets = offsets - offsets[0]
    data[data == ord("+")] = ord(" ")
    at = np.flatnonzero(data == ord("%"))
    ends = offsets[np.searchsorted(offsets, at, side="right")]  # the end of each '%''s key
    at = at[at + 2 < ends]
    high, low = _HEX[data[at + 1]], _HEX[data[at + 2]]
    escape = (high >= 0) & (low >= 0)
    at, high, low = at[escape], high[escape], low[escape]
    data[at] = (high * 16 + low).astype(np.uint8)
    keep = np.ones(len(data), dtype=bool)
    keep[at + 1] = keep[at + 2] = False
    dropped = np.concatenate(([0], np.cumsum(~keep)))
    buffers = [None, pa.py_buffer(offsets - dropped[offsets]), pa.py_buffer(data[keep])]
    try:
        return pa.Array.from_buffers(pa.large_binary(), len(keys), buffers).cast(pa.string())
    except pa.ArrowInvalid:
        return None


def selected(objects: pa.RecordBatch, prefix: str, input_filter: InputConfig) -> pa.RecordBatch | None:
    """The objects `is_selected` keeps; None when a pattern is one this form does not translate."""
    patterns = [*input_filter.include, *input_filter.exclude]
    if any("[" in pattern for pattern in patterns):
        return None
    keys = objects.column("key")
    lower = pc.ascii_lower(keys)  # str.lower() turns no other character into an ASCII one of a suffix
    mask = pc.and_(pc.starts_with(keys, prefix), pc.invert(pc.ends_with(keys, "/")))
    image = pc.ends_with(lower, IMAGE_SUFFIXES[0])
    for suffix in IMAGE_SUFFIXES[1:]:
        image = pc.or_(image, pc.ends_with(lower, suffix))
    mask = pc.and_(mask, image)
    relative = pc.utf8_slice_codeunits(keys, len(prefix))
    if "*" not in input_filter.include:
        included = pa.array(np.zeros(len(keys), dtype=bool))
        for pattern in input_filter.include:
            included = pc.or_(included, pc.match_substring_regex(relative, _regex(pattern)))
        mask = pc.and_(mask, included)
    for pattern in input_filter.exclude:
        mask = pc.and_(mask, pc.invert(pc.match_substring_regex(relative, _regex(pattern))))
    return objects.filter(mask)


def _regex(pattern: str) -> str:
    """An fnmatch pattern without '[' as an RE2 expression of the whole text ('*': any run, '?': one)."""
    parts = (".*" if char == "*" else "." if char == "?" else _literal(char) for char in pattern)
    return "(?s)^" + "".join(parts) + "$"


def _literal(char: str) -> str:
    return char if char.isalnum() and char.isascii() else f"\\x{{{ord(char):x}}}"
