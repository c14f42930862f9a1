"""An S3 Inventory report as the run's input (`--inventory`): its manifest read from S3, then its data
files one at a time, each streamed in record batches, never the whole inventory in memory.

Each data file is copied to a temporary file (ORC and Parquet need to seek; the copy is checked
against the manifest's MD5), read in batches of rows with pyarrow, and deleted before the next. Rows
become the objects a listing yields (`batch.core.inventory.listed_object`), so the run selects, pins
and plans them exactly as it does listed ones. The run reads them as record batches
(`inventory_batches`): the same rows, selected in Arrow (`batch.core.inventory_batches`), no Python
object per row before the sort.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from batch.aws.s3 import download, get_file
from batch.config.model import InputConfig
from batch.core.errors import InputUnreachable
from batch.core.inventory import (
    READ,
    REQUIRED,
    InventoryFile,
    InventoryInvalid,
    InventoryManifest,
    listed_object,
    parse_manifest,
)
from batch.core.inventory_batches import current_objects, objects_batch, selected
from batch.core.redaction import one_line
from batch.core.selection import ListedObject, is_selected

#: Rows per batch read from a data file (the driver holds one batch at a time).
BATCH_ROWS = 10_000


def read_manifest(client: Any, bucket: str, key: str) -> InventoryManifest:
    """The manifest at s3://bucket/key; InputUnreachable with a one-line reason if it cannot be read."""
    where = f"run.inventory: s3://{bucket}/{key}"
    try:
        body = get_file(client, bucket, key)
    except (ClientError, BotoCoreError) as exc:
        raise InputUnreachable(f"{where}: cannot read the manifest: {_reason(exc)}") from None
    if body is None:
        raise InputUnreachable(f"{where}: no such manifest (NoSuchKey)")
    return parse_manifest(body, where)


def inventory_objects(client: Any, manifest: InventoryManifest) -> Iterator[ListedObject]:
    """Every current object the report lists, data file by data file, in the files' order."""
    for file in manifest.files:
        with tempfile.TemporaryDirectory(prefix="rekbatch-inventory-") as folder:
            path = Path(folder) / "data"
            _download(client, manifest.destination_bucket, file, path)
            where = f"run.inventory: s3://{manifest.destination_bucket}/{file.key}"
            for batch in _checked(_record_batches(path, manifest), manifest, where):
                yield from (obj for obj in _row_by_row(batch, manifest.file_format == "CSV", where) if obj)


def inventory_batches(
    client: Any, manifest: InventoryManifest, prefix: str, input_filter: InputConfig
) -> Iterator[pa.RecordBatch]:
    """The report's current objects the run selects (`is_selected`), as record batches of `OBJECTS`,
    data file by data file; the same objects `inventory_objects` yields and the run selects."""
    for file in manifest.files:
        with tempfile.TemporaryDirectory(prefix="rekbatch-inventory-") as folder:
            path = Path(folder) / "data"
            _download(client, manifest.destination_bucket, file, path)
            where = f"run.inventory: s3://{manifest.destination_bucket}/{file.key}"
            yield from file_batches(path, manifest, prefix, input_filter, where=where)


def file_batches(
    path: Path, manifest: InventoryManifest, prefix: str, input_filter: InputConfig, *, where: str = ""
) -> Iterator[pa.RecordBatch]:
    """One local data file's selected objects, a record batch at a time: in Arrow, or row by row
    (`listed_object`) for a batch the vectorised form leaves to it (`batch.core.inventory_batches`)."""
    url_encoded = manifest.file_format == "CSV"
    for batch in _checked(_record_batches(path, manifest), manifest, where):
        names = {name.lower() for name in batch.schema.names}
        missing = [name for name in REQUIRED if name not in names]
        if missing:  # the manifest's fileSchema names them, the file does not hold them
            raise InventoryInvalid(f"{where}: the data file has no column {', '.join(missing)}")
        objects = current_objects(batch, url_encoded=url_encoded)
        chosen = None if objects is None else selected(objects, prefix, input_filter)
        if chosen is None:
            listed = _row_by_row(batch, url_encoded, where)
            chosen = objects_batch([obj for obj in listed if obj and is_selected(obj, prefix, input_filter)])
        if chosen.num_rows:
            yield chosen


def _row_by_row(batch: pa.RecordBatch, url_encoded: bool, where: str) -> Iterator[ListedObject | None]:
    for row in batch.rename_columns([name.lower() for name in batch.schema.names]).to_pylist():
        try:
            yield listed_object(row, url_encoded=url_encoded)
        except InventoryInvalid as exc:
            raise InventoryInvalid(f"{where}: {exc}") from None


def _download(client: Any, bucket: str, file: InventoryFile, path: Path) -> None:
    """The data file to `path`, streamed; InventoryInvalid if its MD5 is not the manifest's."""
    where = f"run.inventory: s3://{bucket}/{file.key}"
    try:
        with path.open("wb") as out:
            md5 = download(client, bucket, file.key, out)
    except (ClientError, BotoCoreError) as exc:
        raise InputUnreachable(f"{where}: cannot read the data file: {_reason(exc)}") from None
    except OSError as exc:  # the temp folder is full, read-only, ...: exit 3, as a full output is
        raise InputUnreachable(
            f"{where}: cannot copy the data file to {path.parent}: {exc.strerror}"
        ) from None
    if md5 != file.md5:
        raise InventoryInvalid(f"{where}: MD5 {md5} is not the manifest's {file.md5}")


def _checked(
    batches: Iterator[pa.RecordBatch], manifest: InventoryManifest, where: str = ""
) -> Iterator[pa.RecordBatch]:
    """`batches`, InventoryInvalid with a one-line reason naming the file (`where`) if it cannot be read."""
    try:
        yield from batches
    except (pa.ArrowException, OSError) as exc:
        raise InventoryInvalid(
            f"{where or 'run.inventory'}: a {manifest.file_format} data file: {one_line(str(exc))}"
        ) from None


def _record_batches(path: Path, manifest: InventoryManifest) -> Iterator[pa.RecordBatch]:
    if manifest.file_format == "CSV":
        with pa.input_stream(str(path), compression="gzip") as probe:
            if not probe.read(1):
                return  # no rows: the report of an empty bucket (pyarrow refuses an empty CSV)
        columns = list(manifest.columns)
        reader = pa_csv.open_csv(
            pa.input_stream(str(path), compression="gzip"),
            read_options=pa_csv.ReadOptions(column_names=columns, block_size=4 << 20),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string())),
        )
        yield from reader
    elif manifest.file_format == "ORC":
        orc = pa_orc.ORCFile(str(path))
        for stripe in range(orc.nstripes):
            yield orc.read_stripe(stripe, columns=_wanted(orc.schema.names))  # a stripe is ORC's unit
    else:
        parquet = pq.ParquetFile(str(path))
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=_wanted(parquet.schema_arrow.names))


def _wanted(names: list[str]) -> list[str]:
    """The columns a row needs (`READ`), as the file spells them."""
    return [name for name in names if name.lower() in READ]


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return one_line(str(exc))
