"""Committed files read where they are on S3, by byte range, through boto3: a read-only pyarrow filesystem.

`read_only_filesystem(client, sizes)` is a `pyarrow.fs.PyFileSystem` whose files are S3 objects (`bucket/key`)
read with ranged GETs of the job's own boto3 client, so the endpoint (`AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL`, the profile), region, credentials and retries are botocore's, as for every other S3
call of the job, and no DuckDB extension (httpfs) is needed. A Parquet reader asks only for the footer and
the column chunks it needs, so a query reads the columns and row groups it uses and never a whole file.
The files and their sizes are given up front (from the manifests): opening one costs no request, and
nothing else can be opened or listed.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from botocore.exceptions import BotoCoreError, ClientError

from batch.core.redaction import one_line

__all__ = ["RangedObject", "S3ReadHandler", "read_only_filesystem"]


class RangedObject:
    """One S3 object of known size as a seekable read-only file: each `read` is one ranged GET."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._position = 0
        self.closed = False

    def size(self) -> int:
        return self._size

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._position, self._size)[whence]
        self._position = min(max(base + offset, 0), self._size)
        return self._position

    def read(self, count: int = -1) -> bytes:
        end = self._size if count is None or count < 0 else min(self._size, self._position + count)
        if end <= self._position:
            return b""
        try:
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-{end - 1}"
            )
            body: bytes = answer["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise OSError(f"cannot read s3://{self._bucket}/{self._key}: {code}") from None
        except BotoCoreError as exc:
            raise OSError(f"cannot read s3://{self._bucket}/{self._key}: {one_line(str(exc))}") from None
        self._position += len(body)
        return body

    def close(self) -> None:
        self.closed = True


class S3ReadHandler(pafs.FileSystemHandler):
    """The handler of `read_only_filesystem`: paths are `bucket/key`; sizes must be given up front."""

    def __init__(self, client: Any, sizes: dict[str, int]) -> None:
        self._client, self._sizes = client, sizes

    def _open(self, path: str) -> RangedObject:
        bucket, _, key = path.partition("/")
        if path not in self._sizes:
            raise FileNotFoundError(f"s3://{path} is not a committed file")
        return RangedObject(self._client, bucket, key, self._sizes[path])

    def open_input_file(self, path: str) -> pa.PythonFile:
        return pa.PythonFile(self._open(path), mode="r")

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self.open_input_file(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [
            pafs.FileInfo(p, pafs.FileType.File, size=self._sizes[p])
            if p in self._sizes
            else pafs.FileInfo(p, pafs.FileType.NotFound)
            for p in paths
        ]

    def get_type_name(self) -> str:
        return "rekbatch-s3-read"

    def normalize_path(self, path: str) -> str:
        return path

    def equals(self, other: Any) -> bool:
        return self is other

    def get_file_info_selector(self, selector: Any) -> list[pafs.FileInfo]:
        raise NotImplementedError("committed files are listed by manifests, never by a listing")

    def _read_only(self, *args: Any) -> Any:
        raise NotImplementedError("this filesystem reads committed files only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def read_only_filesystem(client: Any, sizes: dict[str, int]) -> pafs.PyFileSystem:
    """A pyarrow filesystem reading the objects `sizes` names (`bucket/key` -> bytes) through `client`."""
    return pafs.PyFileSystem(S3ReadHandler(client, sizes))
