"""One committed run's rows read back from the output tables: the run report's only door to them.

`load_run(output, run_id)` reads the run's manifests (`batch.storage.commits.RunStore`: its final
commit, and the segments a long run committed before it) and returns a `RunTables` over exactly the
files they list, in a local folder or on S3, reading one part (one batch's file) at a time, so the
reader's memory follows the largest file, not the run. Only the columns asked for are read, and only the
run's rows are kept. A run that has not committed (segments alone included: the `runs` row comes with
the final commit) has no report: its files are never read, as for every other reader (docs/tables.md,
"How to read the output").
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.registry import all_tables
from batch.config.model import RUN_ID_PATTERN, parse_s3_url
from batch.core.errors import ConfigError, OutputUnreadable, RunNotFound
from batch.storage.commits import RunStore
from batch.storage.sink import Destination

#: Files read at once when a table is scanned (S3 GETs are slow one by one, cheap side by side).
READ_THREADS = 8


@dataclass(frozen=True)
class RunTables:
    """The files of one finished run, by table and part, and how to read them."""

    run_id: str
    output: str
    #: The run's `runs` row.
    run: Mapping[str, Any]
    #: Per table, per part (the file name without `.parquet`, e.g. `<run_id>-a1-000003`): the file's
    #: path under the output root, as the manifest lists it. A table the run did not write is absent.
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
    """The committed files of run `run_id` under `output` (a local folder or `s3://bucket/prefix`).

    Raises ConfigError for a malformed run id, RunNotFound when the run has no manifest under the
    output (it did not commit, or wrote elsewhere), OutputUnreadable when the output cannot be read.
    """
    if not RUN_ID_PATTERN.match(run_id):
        raise ConfigError(f"run id: only letters, digits, '.', '_' and '-' are allowed, got {run_id!r}")
    if output.startswith("s3://"):
        parse_s3_url(output, "output")
    elif not Path(output).is_dir():
        raise OutputUnreadable(f"no such folder: {output}")
    store = RunStore(Destination(output), s3_client)
    with _unreadable(output):
        manifests = store.run_manifests(run_id)  # its segments (`run.commit_every`) and its final one
    if not any(manifest.final for manifest in manifests):
        segments = f" ({len(manifests)} segments committed so far)" if manifests else ""
        raise RunNotFound(
            f"no committed run {run_id} under {output} (it did not commit, or wrote elsewhere){segments}"
        )
    parts: dict[str, dict[str, str]] = {}
    for entry in (entry for manifest in manifests for entry in manifest.files):
        parts.setdefault(entry.table, {})[entry.path.rsplit("/", 1)[-1].removesuffix(".parquet")] = entry.path

    def read_bytes(relative: str) -> bytes:
        with _unreadable(output):
            body = store.read(relative)
        if body is None:
            raise OutputUnreadable(
                f"run {run_id}: committed file {store.destination.location(relative)} is missing"
            )
        return body

    probe = RunTables(run_id, output, {}, parts, read_bytes)
    rows = [row for part in sorted(parts.get("runs", {})) for row in probe.read("runs", part).to_pylist()]
    if not rows:
        raise RunNotFound(f"run {run_id} under {output} has no runs row")
    return RunTables(run_id, output, rows[-1], parts, read_bytes)


@contextlib.contextmanager
def _unreadable(output: str) -> Iterator[None]:
    """S3 errors reading the output, as a one-line OutputUnreadable."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise OutputUnreadable(f"cannot read {output}: {code}") from None
    except BotoCoreError as exc:
        raise OutputUnreadable(f"cannot read {output}: {exc}") from None
