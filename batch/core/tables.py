"""The output tables' pyarrow schemas, shared column groups, and rows -> pyarrow.Table.

Every table starts with `COMMON_FIELDS` (run_id, bucket, key, etag), filled by the job, followed by
its own columns. The analysis tables are defined next to their analysis (`batch.analyses.<name>`);
the job-level tables (`images`, `errors`, `runs`, `call_seconds`) are defined here.
`batch.analyses.all_tables()` lists them all. Every column is documented in `docs/tables.md`.

Layout on disk: `DEST/<table>/dt=YYYY-MM-DD/<run_id>-a<attempt>-<batch>.parquet`; readers open only
the files committed manifests list (`batch.core.manifest`, `batch.storage.readers`). The Hive partition column
`dt` (the run's date, UTC) is a directory name, not a column inside the files: readers add it with
hive partitioning (DuckDB `hive_partitioning=true`, Athena partition projection or MSCK REPAIR).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from batch.core.geometry import upright_size
from batch.core.image_header import ImageHeader

__all__ = [
    "ANALYSIS_DONE",
    "BOX_FIELDS",
    "CALL_SECONDS_SCHEMA",
    "COMMON_FIELDS",
    "ERRORS_SCHEMA",
    "IMAGES_SCHEMA",
    "IMAGE_STATUSES",
    "JOB_TABLES",
    "NAMED_CONFIDENCE",
    "PARTITION_COLUMN",
    "POINT_FIELDS",
    "RUNS_SCHEMA",
    "box_fields",
    "error_row",
    "image_row",
    "point_struct",
    "rows_to_table",
    "table_schema",
]

#: The Hive partition directory of every table (`dt=YYYY-MM-DD`, the run's UTC date). Not a column in
#: the Parquet files.
PARTITION_COLUMN = "dt"

#: Values of `images.status`.
IMAGE_STATUSES: tuple[str, ...] = ("analysed", "rejected", "failed", "skipped", "changed")

_TIMESTAMP = pa.timestamp("ms", tz="UTC")

#: First columns of every table; the job fills them, the analyses never do.
COMMON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("run_id", pa.string()),
    pa.field("bucket", pa.string()),
    pa.field("key", pa.string()),
    pa.field("etag", pa.string()),
)


def box_fields(prefix: str = "") -> list[pa.Field]:
    """The 12 box columns (see `batch.core.geometry.BoxPlacement.box_columns`), each name prefixed.

    Use a prefix for a table with more than one box per row (e.g. `box_fields("source_")`).
    """
    normalised = [pa.field(f"{prefix}box_{p}", pa.float64()) for p in ("left", "top", "width", "height")]
    upright_px = [pa.field(f"{prefix}box_{p}_px", pa.int32()) for p in ("left", "top", "width", "height")]
    stored_px = [
        pa.field(f"{prefix}stored_box_{p}_px", pa.int32()) for p in ("left", "top", "width", "height")
    ]
    return normalised + upright_px + stored_px


#: The 12 box columns without a prefix: upright normalised (float64), upright pixels (int32), stored pixels.
BOX_FIELDS: tuple[pa.Field, ...] = tuple(box_fields())

#: A name Rekognition gives with its confidence (a PPE body part, a moderation content type).
NAMED_CONFIDENCE = pa.struct([pa.field("name", pa.string()), pa.field("confidence", pa.float64())])

#: The members of a point struct (see `batch.core.geometry.BoxPlacement.point_columns`).
POINT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("x", pa.float64()),
    pa.field("y", pa.float64()),
    pa.field("x_px", pa.int32()),
    pa.field("y_px", pa.int32()),
    pa.field("stored_x_px", pa.int32()),
    pa.field("stored_y_px", pa.int32()),
)


def point_struct(*leading: pa.Field) -> pa.StructType:
    """A struct of `leading` fields then the point fields, e.g. a landmark: `point_struct(type)`."""
    return pa.struct([*leading, *POINT_FIELDS])


def table_schema(specific: Iterable[pa.Field]) -> pa.Schema:
    """A table's full schema: `COMMON_FIELDS` then its own columns. Raises ValueError on a duplicate name."""
    fields = [*COMMON_FIELDS, *specific]
    names = [f.name for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate column names: {duplicates}")
    return pa.schema(fields)


#: An analysis an image needs no more, under the settings digest it ran with (`batch.core.incremental`).
ANALYSIS_DONE = pa.struct([pa.field("analysis", pa.string()), pa.field("settings_digest", pa.string())])

IMAGES_SCHEMA = table_schema(
    [
        pa.field("size_bytes", pa.int64()),
        pa.field("last_modified", _TIMESTAMP),
        pa.field("format", pa.string()),
        pa.field("stored_width", pa.int32()),
        pa.field("stored_height", pa.int32()),
        pa.field("exif_orientation", pa.int8()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("status_reason", pa.string()),
        pa.field("analyses", pa.list_(pa.string())),
        pa.field("analyses_done", pa.list_(ANALYSIS_DONE)),
        # How the image went to Rekognition (`batch.core.image_checks.Route`); null when it was not sent.
        pa.field("sent_as", pa.string()),
        pa.field("sent_bytes", pa.int64()),
        pa.field("sent_width", pa.int32()),
        pa.field("sent_height", pa.int32()),
        # The region of the image's stateless calls (`batch.core.regions`); null when it was not sent.
        pa.field("sent_region", pa.string()),
    ]
)


def image_row(
    common: Mapping[str, Any],
    *,
    size_bytes: int,
    last_modified: Any,
    status: str,
    reason: str | None,
    analyses: Sequence[str] = (),
    header: ImageHeader | None = None,
    sent: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One `images` row: the image's outcome and, when its header was read, its format and sizes
    (`width`/`height` upright); an analysed image's `status_reason` notes a header read in part or
    not at all (`ImageHeader.problem`). `analyses_done` starts empty: the batch task fills it."""
    row: dict[str, Any] = {
        **common,
        "size_bytes": size_bytes,
        "last_modified": last_modified,
        "status": status,
        "status_reason": reason,
        "analyses": list(analyses),
        "analyses_done": [],
        "exif_orientation": 1,
        **(sent or {}),
    }
    if header is not None and header.stored_width is not None and header.stored_height is not None:
        width, height = upright_size(header.stored_width, header.stored_height, header.orientation)
        row.update(
            format=header.format,
            stored_width=header.stored_width,
            stored_height=header.stored_height,
            exif_orientation=header.orientation,
            width=width,
            height=height,
        )
    if header is not None and header.problem and status == "analysed":
        row["status_reason"] = header.problem
    return row


ERRORS_SCHEMA = table_schema(
    [
        pa.field("analysis", pa.string()),
        pa.field("operation", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("retryable", pa.bool_()),
    ]
)


def error_row(
    common: Mapping[str, Any],
    *,
    code: str | None,
    message: str | None,
    analysis: str | None = None,
    operation: str | None = None,
    attempts: int = 0,
    retryable: bool = False,
) -> dict[str, Any]:
    """One `errors` row: what failed for the image (`common`: its run_id, bucket, key and etag)."""
    return {
        **common,
        "analysis": analysis,
        "operation": operation,
        "error_code": code,
        "message": message,
        "attempts": attempts,
        "retryable": retryable,
    }


_QUOTA = pa.struct(
    [
        pa.field("operation", pa.string()),
        pa.field("tps", pa.float64()),
        pa.field("source", pa.string()),
    ]
)
_CALL_COUNT = pa.struct(
    [
        pa.field("operation", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("count", pa.int64()),
    ]
)

RUNS_SCHEMA = table_schema(
    [
        pa.field("started_at", _TIMESTAMP),
        pa.field("ended_at", _TIMESTAMP),
        pa.field("input", pa.string()),
        pa.field("output", pa.string()),
        pa.field("analyses", pa.list_(pa.string())),
        pa.field("config_digest", pa.string()),
        pa.field("command_line", pa.string()),
        pa.field("images_listed", pa.int64()),
        pa.field("images_analysed", pa.int64()),
        pa.field("images_rejected", pa.int64()),
        pa.field("images_failed", pa.int64()),
        pa.field("images_skipped", pa.int64()),
        pa.field("images_changed", pa.int64()),
        pa.field("images_unchanged", pa.int64()),
        pa.field("calls", pa.list_(_CALL_COUNT)),
        pa.field("retries", pa.int64()),
        pa.field("throttled", pa.int64()),
        pa.field("estimated_cost_usd", pa.float64()),
        # Of `calls` and `estimated_cost_usd`: the calls paid for work a crash or a failed task threw away.
        pa.field("repeated_calls", pa.list_(_CALL_COUNT)),
        pa.field("repeated_cost_usd", pa.float64()),
        # The collection's storage calls (CreateCollection, ListFaces, DeleteFaces...), apart from
        # the per-image calls above; 0 without a face collection.
        pa.field("storage_cost_usd", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("error_rate", pa.float64()),
        pa.field("exit_code", pa.int32()),
        pa.field("attempt", pa.int32()),
        pa.field("resumed", pa.bool_()),
        pa.field("kept_batches", pa.int64()),
        pa.field("kept_images", pa.int64()),
        # The run's manifests: its segments (run.commit_every) and the final one; 1 without segments.
        pa.field("segments", pa.int64()),
        pa.field("full", pa.bool_()),
        pa.field("region", pa.string()),
        # Each operation's calls per second for the run, and where it came from (flag, config,
        # service-quotas, default).
        pa.field("quotas", pa.list_(_QUOTA)),
    ]
)

#: Rekognition attempts per second of a run (`batch.core.timeline`), for the run report's chart.
CALL_SECONDS_SCHEMA = table_schema(
    [
        pa.field("second", pa.int32()),
        pa.field("operation", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("calls", pa.int64()),
        pa.field("quota_tps", pa.float64()),
    ]
)

#: The tables the job itself fills (one `runs` row per run, one `images` row per image per run,
#: one `errors` row per final error, `call_seconds` rows per second of calls).
JOB_TABLES: Mapping[str, pa.Schema] = {
    "images": IMAGES_SCHEMA,
    "errors": ERRORS_SCHEMA,
    "runs": RUNS_SCHEMA,
    "call_seconds": CALL_SECONDS_SCHEMA,
}


def rows_to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema` from row dicts.

    A key missing from a row becomes null. A key the schema does not have raises ValueError (pyarrow
    would drop it silently; this catches typos in column names). Only top-level keys are checked;
    pyarrow ignores unknown members of struct values.
    """
    names = set(schema.names)
    for index, row in enumerate(rows):
        unknown = row.keys() - names
        if unknown:
            raise ValueError(f"row {index} has columns not in the schema: {sorted(unknown)}")
    return pa.Table.from_pylist(list(rows), schema=schema)
