"""Views over the committed files, for DuckDB and Athena: the documented read path.

* `duckdb_views_sql(location, manifests)`: DuckDB SQL, one view per table over
  `read_parquet([...committed files...])` plus a `commits` view (`rekbatch views --output DEST` prints
  it). Build it again after each run: a view lists the files committed when it was built.
* `athena_ddl(location, database)`: Athena DDL, one external table per table (`<table>_files`, with
  partition projection on `dt`), a `commits` table over the manifests (JSON SerDe), and views named
  after the tables that keep the rows of committed files only (`"$path"` in the manifests' file lists),
  so they need no rebuilding (`rekbatch athena-ddl --location s3://...`).
* `connect(output)`: a DuckDB connection with the views; for S3 output each view is a lazy pyarrow
  dataset of the committed files, read in place by byte range through boto3
  (`batch.storage.readers.committed_dataset`), as DuckDB's httpfs extension may not be installable. A
  committed file that is missing is an `OutputUnreadable` naming the run and the file.

The SQL builders are pure; duckdb is imported only by `connect`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from batch.analyses.registry import all_tables
from batch.core.manifest import COMMITS_DIR, COMMITS_SCHEMA, FileEntry, Manifest
from batch.core.tables import PARTITION_COLUMN
from batch.storage.commits import RunStore
from batch.storage.readers import check_committed, committed_dataset
from batch.storage.sink import Destination

__all__ = [
    "athena_ddl",
    "committed_file_list",
    "committed_files",
    "connect",
    "duckdb_type",
    "duckdb_views_sql",
    "hive_type",
]


# --- types ------------------------------------------------------------------------------------------


def duckdb_type(data_type: pa.DataType) -> str:
    """The DuckDB type `read_parquet` gives a column of this pyarrow type."""
    if pa.types.is_list(data_type):
        return f"{duckdb_type(data_type.value_type)}[]"
    if pa.types.is_struct(data_type):
        return "STRUCT(" + ", ".join(f"{_quoted(f.name)} {duckdb_type(f.type)}" for f in data_type) + ")"
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMP WITH TIME ZONE" if data_type.tz else "TIMESTAMP"
    return _SCALARS[str(data_type)][0]


def hive_type(data_type: pa.DataType) -> str:
    """The Athena (Hive DDL) type of a column of this pyarrow type."""
    if pa.types.is_list(data_type):
        return f"array<{hive_type(data_type.value_type)}>"
    if pa.types.is_struct(data_type):
        return "struct<" + ",".join(f"{f.name}:{hive_type(f.type)}" for f in data_type) + ">"
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    return _SCALARS[str(data_type)][1]


_SCALARS = {
    "string": ("VARCHAR", "string"),
    "bool": ("BOOLEAN", "boolean"),
    "int8": ("TINYINT", "tinyint"),
    "int32": ("INTEGER", "int"),
    "int64": ("BIGINT", "bigint"),
    "double": ("DOUBLE", "double"),
}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- DuckDB -----------------------------------------------------------------------------------------


def committed_files(manifests: Iterable[Manifest], table: str) -> list[FileEntry]:
    """The files of `table` that committed runs list, in commit order."""
    return [entry for manifest in manifests for entry in manifest.files_of(table)]


def duckdb_views_sql(destination: Destination, manifests: Sequence[Manifest]) -> str:
    """DuckDB statements creating one view per output table and a `commits` view (see module doc)."""
    statements = []
    for table, schema in all_tables().items():
        files = [destination.location(f.path) for f in committed_files(manifests, table)]
        statements.append(f"CREATE OR REPLACE VIEW {_quoted(table)} AS {_parquet_select(schema, files)};")
    commits = [destination.location(m.path) for m in manifests]
    statements.append(f"CREATE OR REPLACE VIEW commits AS {_commits_select(commits)};")
    return "\n".join(statements) + "\n"


def _parquet_select(schema: pa.Schema, files: Sequence[str]) -> str:
    if not files:
        partition = pa.field(PARTITION_COLUMN, pa.string())
        return _empty_select(pa.schema([*schema, partition]))
    listing = ", ".join(_literal(f) for f in files)
    # union_by_name: files written before a column was added read as null in it.
    options = (
        f"hive_partitioning = true, hive_types = {{'{PARTITION_COLUMN}': VARCHAR}}, union_by_name = true"
    )
    return f"SELECT * FROM read_parquet([{listing}], {options})"


def _commits_select(files: Sequence[str]) -> str:
    if not files:
        return _empty_select(COMMITS_SCHEMA)
    columns = ", ".join(f"{_literal(f.name)}: {_literal(duckdb_type(f.type))}" for f in COMMITS_SCHEMA)
    listing = ", ".join(_literal(f) for f in files)
    return f"SELECT * FROM read_json([{listing}], format = 'newline_delimited', columns = {{{columns}}})"


def _empty_select(schema: pa.Schema) -> str:
    columns = ", ".join(f"CAST(NULL AS {duckdb_type(f.type)}) AS {_quoted(f.name)}" for f in schema)
    return f"SELECT {columns} WHERE false"


# --- Athena -----------------------------------------------------------------------------------------


def athena_ddl(location: str, database: str = "rekbatch") -> str:
    """Athena DDL for an output root `s3://bucket/prefix/` (see module doc)."""
    root = location.rstrip("/") + "/"
    db = f"`{database}`"
    statements = [f"CREATE DATABASE IF NOT EXISTS {db};", _athena_commits_table(db, root)]
    statements.append(
        f'CREATE OR REPLACE VIEW "{database}"."committed_files" AS\n'
        f"SELECT c.run_id, f.table_name, {_literal(root)} || f.path AS file_path, f.row_count, f.sha256\n"
        f'FROM "{database}"."commits" AS c\n'
        "CROSS JOIN UNNEST(c.files) AS f (table_name, path, row_count, sha256, size_bytes);"
    )
    for table, schema in all_tables().items():
        columns = ",\n".join(f"  `{f.name}` {hive_type(f.type)}" for f in schema)
        table_root = f"{root}{table}/"
        template = f"{table_root}{PARTITION_COLUMN}=${{{PARTITION_COLUMN}}}"
        statements.append(
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {db}.`{table}_files` (\n{columns}\n)\n"
            f"PARTITIONED BY (`{PARTITION_COLUMN}` string)\n"
            f"STORED AS PARQUET\nLOCATION {_literal(table_root)}\nTBLPROPERTIES (\n"
            "  'projection.enabled' = 'true',\n"
            f"  'projection.{PARTITION_COLUMN}.type' = 'date',\n"
            f"  'projection.{PARTITION_COLUMN}.format' = 'yyyy-MM-dd',\n"
            f"  'projection.{PARTITION_COLUMN}.range' = '2020-01-01,NOW',\n"
            f"  'projection.{PARTITION_COLUMN}.interval' = '1',\n"
            f"  'projection.{PARTITION_COLUMN}.interval.unit' = 'DAYS',\n"
            f"  'storage.location.template' = {_literal(template)}\n"
            ");"
        )
        committed = (
            f'SELECT file_path FROM "{database}"."committed_files" WHERE table_name = {_literal(table)}'
        )
        statements.append(
            f'CREATE OR REPLACE VIEW "{database}"."{table}" AS SELECT * FROM "{database}"."{table}_files" '
            f'WHERE "$path" IN ({committed});'
        )
    return "\n\n".join(statements) + "\n"


def _athena_commits_table(db: str, root: str) -> str:
    columns = ",\n".join(f"  `{f.name}` {hive_type(f.type)}" for f in COMMITS_SCHEMA)
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {db}.`commits` (\n{columns}\n)\n"
        "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n"
        f"LOCATION {_literal(root + COMMITS_DIR + '/')};"
    )


def committed_file_list(
    destination: Destination, manifests: Sequence[Manifest], table: str
) -> list[dict[str, Any]]:
    """Every committed file of `table`, oldest commit first: its location (a path or an s3:// URL), its
    run, its date partition, rows, size and SHA-256 (`rekbatch files`)."""
    return [
        {
            "location": destination.location(entry.path),
            "run_id": manifest.run_id,
            "dt": manifest.dt,
            "rows": entry.rows,
            "size_bytes": entry.size_bytes,
            "sha256": entry.sha256,
        }
        for manifest in manifests
        for entry in manifest.files_of(table)
    ]


def connect(output: str, s3_client: Any = None) -> Any:
    """A DuckDB connection with a view per table over the committed files of `output` (see module doc)."""
    import duckdb

    store = RunStore(Destination(output), s3_client)
    manifests = store.manifests()
    check_committed(store, manifests)  # a reader would fail on a missing file with a traceback
    connection = duckdb.connect()
    if not store.destination.is_s3:
        connection.execute(duckdb_views_sql(store.destination, manifests))
        return connection
    for table, schema in all_tables().items():
        connection.register(table, committed_dataset(store, manifests, table, schema))
    commits = [json.loads(m.to_json()) for m in manifests]
    connection.register("commits", pa.Table.from_pylist(commits, schema=COMMITS_SCHEMA))
    return connection
