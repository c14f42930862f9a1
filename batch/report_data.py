"""One run's rows read back from the output tables: the run report's only door to them.

`load_run(output, run_id)` finds the run's files, in a local folder or on S3 (through `batch.s3`), and
returns a `RunTables` that reads them one part (one batch's file) at a time, so the reader's memory
follows the largest file, not the run. Only the columns asked for are read, and only the run's rows
are kept (the `run_id` column is checked, not just the file name).

How the files are found is the layout of docs/tables.md: the `runs` row first (a run writes it last,
so a run without one has not finished), its `dt` partition, then every table's
`<table>/dt=<dt>/<run_id>[-<batch>].parquet`. The committed-runs read path (manifests) is meant to
replace `_find_files` and keep what `RunTables` offers.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses import all_tables
from batch.config import RUN_ID_PATTERN, parse_s3_url
from batch.errors import ConfigError, OutputUnreadable, RunNotFound
from batch.s3 import list_pages, read_object
from batch.selection import ListedObject

#: Files read at once when a table is scanned (S3 GETs are slow one by one, cheap side by side).
READ_THREADS = 8


@dataclass(frozen=True)
class RunTables:
    """The files of one finished run, by table and part, and how to read them."""

    run_id: str
    output: str
    #: The run's `runs` row.
    run: Mapping[str, Any]
    #: Per table, per part (the file name without `.parquet`: `<run_id>-<batch>` for the tasks' files,
    #: `<run_id>` for the driver's): where the file is. A table the run did not write is absent.
    parts: Mapping[str, Mapping[str, str]]
    read_bytes: Callable[[str], bytes]

    def read(self, table: str, part: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The run's rows of one part, with `columns` (all when None; null where the file lacks one)."""
        source = pq.ParquetFile(io.BytesIO(self.read_bytes(self.parts[table][part])))
        wanted = list(dict.fromkeys(["run_id", *(columns or source.schema_arrow.names)]))
        present = [name for name in wanted if name in source.schema_arrow.names]
        rows = source.read(columns=present)
        rows = rows.filter(pc.equal(rows["run_id"], self.run_id))
        schema = all_tables().get(table)
        for name in wanted:
            if name not in present and schema is not None and name in schema.names:
                missing = schema.field(name)
                rows = rows.append_column(missing, pa.nulls(rows.num_rows, missing.type))
        return rows

    def scan(self, table: str, columns: Sequence[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """(part, rows) for every part of `table`, in part order."""
        parts = sorted(self.parts.get(table, {}))
        for (_, part), rows in self.read_many([(table, part) for part in parts], columns):
            yield part, rows

    def read_many(
        self, wanted: Sequence[tuple[str, str]], columns: Sequence[str] | None = None
    ) -> Iterator[tuple[tuple[str, str], pa.Table]]:
        """((table, part), rows) for each of `wanted`, in order, read `READ_THREADS` at a time."""
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="rekbatch-report-read") as pool:
            yield from zip(wanted, pool.map(lambda tp: self.read(tp[0], tp[1], columns), wanted), strict=True)


def load_run(output: str, run_id: str, s3_client: Any = None) -> RunTables:
    """The files of run `run_id` under `output` (a local folder or `s3://bucket/prefix`).

    Raises ConfigError for a malformed run id, RunNotFound when the output holds no `runs` row for
    it, OutputUnreadable when the output cannot be listed.
    """
    if not RUN_ID_PATTERN.match(run_id):
        raise ConfigError(f"run id: only letters, digits, '.', '_' and '-' are allowed, got {run_id!r}")
    files = _S3Files(s3_client, output) if output.startswith("s3://") else _LocalFiles(Path(output))
    runs = files.runs_files(run_id)
    if not runs:
        raise RunNotFound(
            f"no run {run_id} under {output} (no runs row: it did not finish, or wrote elsewhere)"
        )
    dt, location = max(runs)  # a run id used on two days: the later
    parts = {table: files.run_files(table, dt, run_id) for table in all_tables() if table != "runs"}
    parts = {table: found for table, found in parts.items() if found}
    parts["runs"] = {run_id: location}
    probe = RunTables(run_id, output, {}, parts, files.read_bytes)
    rows = probe.read("runs", run_id).to_pylist()
    if not rows:
        raise RunNotFound(f"{location} holds no row of run {run_id}")
    return RunTables(run_id, output, rows[-1], parts, files.read_bytes)


def _is_run_file(name: str, run_id: str) -> bool:
    """`<run_id>.parquet` or `<run_id>-<batch>.parquet`, not another run whose id starts the same."""
    return re.fullmatch(re.escape(run_id) + r"(-\d+)?\.parquet", name) is not None


def _dt_of(path: str) -> str:
    match = re.search(r"/dt=([^/]+)/[^/]+$", path)
    return match.group(1) if match else ""


class _LocalFiles:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise OutputUnreadable(f"no such folder: {root}")
        self._root = root

    def runs_files(self, run_id: str) -> list[tuple[str, str]]:
        found = (p.as_posix() for p in self._root.glob(f"runs/dt=*/{run_id}.parquet"))
        return [(_dt_of(path), path) for path in found]

    def run_files(self, table: str, dt: str, run_id: str) -> dict[str, str]:
        folder = self._root / table / f"dt={dt}"
        found = folder.glob(f"{run_id}*.parquet") if folder.is_dir() else ()
        return {p.stem: str(p) for p in found if _is_run_file(p.name, run_id)}

    @staticmethod
    def read_bytes(location: str) -> bytes:
        return Path(location).read_bytes()


class _S3Files:
    def __init__(self, client: Any, output: str) -> None:
        self._client = client
        self._output = output
        self._bucket, prefix = parse_s3_url(output, "output")
        self._prefix = f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""
        self._objects: dict[str, ListedObject] = {}

    def _list(self, prefix: str) -> list[ListedObject]:
        try:
            objects = [obj for page in list_pages(self._client, self._bucket, prefix) for obj in page]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise OutputUnreadable(f"cannot list {self._output}: {code}") from None
        except BotoCoreError as exc:
            raise OutputUnreadable(f"cannot list {self._output}: {exc}") from None
        for obj in objects:
            self._objects[f"s3://{self._bucket}/{obj.key}"] = obj
        return objects

    def runs_files(self, run_id: str) -> list[tuple[str, str]]:
        # The run's date is not known yet: the runs folder holds one file per run, so list it all.
        return [
            (_dt_of(obj.key), f"s3://{self._bucket}/{obj.key}")
            for obj in self._list(f"{self._prefix}runs/")
            if obj.key.rsplit("/", 1)[-1] == f"{run_id}.parquet" and _dt_of(obj.key)
        ]

    def run_files(self, table: str, dt: str, run_id: str) -> dict[str, str]:
        objects = self._list(f"{self._prefix}{table}/dt={dt}/{run_id}")
        names = {obj.key.rsplit("/", 1)[-1]: obj for obj in objects}
        return {
            name.removesuffix(".parquet"): f"s3://{self._bucket}/{obj.key}"
            for name, obj in names.items()
            if _is_run_file(name, run_id)
        }

    def read_bytes(self, location: str) -> bytes:
        try:
            return read_object(self._client, self._bucket, self._objects[location])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise OutputUnreadable(f"cannot read {location}: {code}") from None
