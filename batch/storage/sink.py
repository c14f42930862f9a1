"""The job's only door to its output, a local folder or S3: whole files in, whole files out.

Data files are `DEST/<table>/dt=<run date>/<name>.parquet`, named from the run, the attempt and the batch
number (`batch.core.manifest.data_file_name`), never from S3 keys, so a re-run task rewrites the same
names. Each file is serialised whole in memory and published in one step (one PUT with a SHA-256 on S3;
a temp file renamed into place locally): a write that fails part-way publishes nothing. `create` is the
commit primitive: it writes only if no file has the name (S3 `If-None-Match: *`; locally a hard link of
a complete temp file), so of two writers exactly one wins. S3 goes through boto3 (`batch.aws.s3`), which
honours `AWS_ENDPOINT_URL_S3`, and every PUT carries the run's `[output]` server-side encryption. A
write the output refuses (a full disk or quota, a read-only or denied folder, a PUT still failing after
botocore's retries) raises `OutputUnwritable` with a one-line reason: the run stops (exit 3), it does not
turn images into `failed` rows. See docs/design/commit-protocol.md.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from batch.aws.s3 import (
    create_file,
    delete_files,
    download,
    encryption_arguments,
    get_file,
    list_files,
    list_folders,
    put_file,
    put_local_file,
)
from batch.config.model import OutputConfig, parse_s3_url
from batch.core.errors import OutputUnreadable, OutputUnwritable
from batch.core.manifest import FileEntry
from batch.core.tables import rows_to_table

#: What a local write fails with when the output itself refuses it, whatever the file: disk full, disk
#: quota, read-only file system, permission denied, immutable folder. Other errors (e.g. EFBIG, one file
#: too large) stay the task's own.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@dataclass(frozen=True)
class StoredFile:
    """A file found under the output root."""

    path: str  # relative to the root, '/'-separated
    size_bytes: int
    modified: datetime


@dataclass(frozen=True)
class Destination:
    """Where the tables go: a local folder or `s3://bucket/prefix`. Small and picklable (it travels
    with every task); the S3 client is passed to each call, as boto3 clients don't pickle."""

    root: str
    #: Server-side encryption of every file written to S3 (`output.sse`, `output.kms_key_id`).
    sse: str = ""
    kms_key_id: str = ""

    @classmethod
    def for_output(cls, root: str, options: OutputConfig) -> Destination:
        """The destination a run writes to, with its `[output]` encryption settings. Use it for every
        writer; a bare `Destination(root)` is for readers (and leaves encryption to the bucket)."""
        return cls(root, options.sse, options.kms_key_id)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def relative_path(self, table: str, dt: str, name: str) -> str:
        return f"{table}/dt={dt}/{name}.parquet"

    def location(self, relative: str) -> str:
        """The full path or `s3://` URL of a file under the root."""
        if self.is_s3:
            bucket, key = self._s3_key(relative)
            return f"s3://{bucket}/{key}"
        return str(Path(self.root).resolve() / relative)

    def publish(self, relative: str, body: bytes, s3_client: Any = None) -> None:
        """Write `body` at `relative` in one step, replacing a file of that name."""
        with self._writing(relative):
            if self.is_s3:
                put_file(s3_client, *self._s3_key(relative), body, self._encryption)
                return
            path = Path(self.root) / relative
            with _complete_temp_file(path, body) as tmp:
                tmp.replace(path)

    def publish_file(self, relative: str, local: Path, s3_client: Any = None) -> None:
        """`publish` for a file on disk too large to hold in memory (streamed in one PUT, or copied
        beside the target and renamed into place)."""
        with self._writing(relative):
            if self.is_s3:
                put_local_file(s3_client, *self._s3_key(relative), local, self._encryption)
                return
            path = Path(self.root) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False)  # noqa: SIM115
            try:
                with handle, local.open("rb") as source:
                    shutil.copyfileobj(source, handle)
                Path(handle.name).replace(path)
            finally:
                Path(handle.name).unlink(missing_ok=True)

    def download(self, relative: str, out: BinaryIO, s3_client: Any = None) -> None:
        """The file at `relative` written to `out` a chunk at a time (S3), or copied (local)."""
        if self.is_s3:
            download(s3_client, *self._s3_key(relative), out)
            return
        with (Path(self.root) / relative).open("rb") as handle:
            shutil.copyfileobj(handle, out)

    def create(self, relative: str, body: bytes, s3_client: Any = None) -> bool:
        """Write `body` at `relative` only if no file has that name; False if one has (another won)."""
        with self._writing(relative):
            if self.is_s3:
                return create_file(s3_client, *self._s3_key(relative), body, self._encryption)
            path = Path(self.root) / relative
            with _complete_temp_file(path, body) as tmp:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            return True

    def check_writable(self) -> None:
        """A local output: create the folder and a file in it (removed at once), so a read-only, full or
        denied folder stops the run before it calls anything. S3: `batch.aws.s3.check_writable`."""
        with self._writing(""):
            root = Path(self.root)
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".tmp-"):
                pass

    @contextlib.contextmanager
    def _writing(self, relative: str) -> Iterator[None]:
        """The output refusing a write of `relative` (`OUTPUT_ERRNOS`, S3 errors) as OutputUnwritable."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in OUTPUT_ERRNOS:
                raise
            reason = exc.strerror
        except ClientError as exc:
            reason = exc.response.get("Error", {}).get("Code", "error")
        except BotoCoreError as exc:
            reason = str(exc)
        else:
            return
        raise OutputUnwritable(f"cannot write {self.location(relative)}: {reason}") from None

    def read(self, relative: str, s3_client: Any = None) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        if self.is_s3:
            return get_file(s3_client, *self._s3_key(relative))
        try:
            return (Path(self.root) / relative).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputUnreadable(f"cannot read {self.location(relative)}: {exc.strerror}") from None

    def list(self, prefix: str, s3_client: Any = None) -> Iterator[StoredFile]:
        """Every file under `prefix` (relative to the root: a folder, e.g. `_commits/`, or the start of
        names in one, e.g. `_runs/r1/batch-`), as they come (on S3, a request per 1,000)."""
        if self.is_s3:
            bucket, key_prefix = self._s3_key(prefix)
            root_length = len(key_prefix) - len(prefix)
            for key, size, modified in list_files(s3_client, bucket, key_prefix):
                yield StoredFile(key[root_length:], size, modified)
            return
        root = Path(self.root)
        start = root / prefix
        if prefix and not prefix.endswith("/"):  # the files of its folder whose names start so
            folder = start.parent
            paths = sorted(folder.glob(f"{glob.escape(start.name)}*")) if folder.is_dir() else []
        elif start.is_dir():
            paths = sorted(start.rglob("*"))
        else:
            return
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:  # another writer's temp file, renamed or removed since
                continue
            if S_ISREG(stat.st_mode):
                yield StoredFile(
                    path.relative_to(root).as_posix(),
                    stat.st_size,
                    datetime.fromtimestamp(stat.st_mtime, UTC),
                )

    def folders(self, prefix: str, s3_client: Any = None) -> Sequence[str]:
        """The names of the folders right under the folder `prefix` (e.g. `_runs/`): one request per
        1,000 on S3, whatever they hold."""
        if self.is_s3:
            bucket, key_prefix = self._s3_key(prefix)
            return [
                folder[len(key_prefix) :].rstrip("/")
                for folder in list_folders(s3_client, bucket, key_prefix)
            ]
        start = Path(self.root) / prefix
        return sorted(p.name for p in start.iterdir() if p.is_dir()) if start.is_dir() else []

    def delete(self, relatives: Sequence[str], s3_client: Any = None) -> None:
        if self.is_s3:
            delete_files(
                s3_client, parse_s3_url(self.root, "output")[0], [self._s3_key(r)[1] for r in relatives]
            )
            return
        for relative in relatives:
            (Path(self.root) / relative).unlink(missing_ok=True)

    @property
    def _encryption(self) -> dict[str, str]:
        return encryption_arguments(self.sse, self.kms_key_id)

    def _s3_key(self, relative: str) -> tuple[str, str]:
        bucket, prefix = parse_s3_url(self.root, "output")
        return bucket, (f"{prefix.rstrip('/')}/{relative}" if prefix.strip("/") else relative)


@contextlib.contextmanager
def _complete_temp_file(path: Path, body: bytes) -> Iterator[Path]:
    """A temp file beside `path` holding all of `body` (flushed to disk), removed afterwards; a write that
    fails part-way (disk full, file size limit) raises and leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False)  # noqa: SIM115
    tmp = Path(handle.name)
    try:
        with handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_file(
    to: str,
    schema: pa.Schema,
    tables: Iterable[pa.Table],
    *,
    compression: str = "zstd",
    s3_client: Any = None,
    encryption: Mapping[str, str] | None = None,
) -> int:
    """Stream `tables` into ONE Parquet file at `to` (a local path or `s3://bucket/key`); its rows.

    For a file too large to build in memory (`rekbatch collection export`), not for the job's tables:
    the tables are written one by one to a temp file (beside the target, or the system's temp folder
    for S3), which is then published whole (renamed into place, or sent in one PUT with its SHA-256).
    A failure part-way publishes nothing.
    """
    target = None if to.startswith("s3://") else Path(to)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed at once, pyarrow opens it by name
        dir=None if target is None else target.parent, prefix=".tmp-", suffix=".parquet", delete=False
    )
    handle.close()
    tmp, rows = Path(handle.name), 0
    try:
        with pq.ParquetWriter(tmp, schema, compression=None if compression == "none" else compression) as out:
            for table in tables:
                out.write_table(table)
                rows += table.num_rows
        if target is None:
            put_local_file(s3_client, *parse_s3_url(to, "--to"), tmp, encryption)
        else:
            with tmp.open("rb") as written:
                os.fsync(written.fileno())
            tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def parquet_bytes(table: pa.Table, compression: str) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=None if compression == "none" else compression)
    return buffer.getvalue()


def write_tables(
    destination: Destination,
    rows_by_table: Mapping[str, list[dict[str, Any]]],
    schemas: Mapping[str, pa.Schema],
    *,
    dt: str,
    name: str,
    compression: str,
    s3_client: Any = None,
) -> list[FileEntry]:
    """Write one file per table that has rows, all named `name` in the `dt` partition; return what a
    manifest records of each (path under the root, rows, SHA-256, size)."""
    written = []
    for table_name, rows in rows_by_table.items():
        if not rows:
            continue
        body = parquet_bytes(rows_to_table(rows, schemas[table_name]), compression)
        relative = destination.relative_path(table_name, dt, name)
        destination.publish(relative, body, s3_client)
        written.append(
            FileEntry(table_name, relative, len(rows), hashlib.sha256(body).hexdigest(), len(body))
        )
    return written
