"""batch.storage.readers: the read path opens exactly the committed files; its SQL has the tables' types."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import COMMITTED_AT, commit_rows

from batch.analyses.registry import all_tables
from batch.cli.main import main
from batch.core.errors import OutputUnreadable
from batch.core.manifest import COMMITS_SCHEMA, data_file_name
from batch.query import views
from batch.storage import readers
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, write_tables

duckdb = pytest.importorskip("duckdb")
LATER = COMMITTED_AT + timedelta(hours=1)


def image_row(key: str, run_id: str = "r1") -> dict:
    return {"run_id": run_id, "bucket": "b", "key": key, "etag": "e", "status": "analysed"}


def test_strays_and_uncommitted_files_are_never_read(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    manifest = commit_rows(store, "r1", {"images": [image_row("a.jpg"), image_row("b.jpg")]})
    (committed,) = manifest.files
    folder = (tmp_path / committed.path).parent
    # A crashed run's complete file, copies named the way pyarrow skips and DuckDB reads, a partial file.
    write_tables(
        store.destination,
        {"images": [image_row("c.jpg", "r2")]},
        all_tables(),
        dt="2026-11-25",
        name=data_file_name("r2", 1, 0),
        compression="none",
    )
    for stray in ("_x.parquet", ".x.parquet"):
        shutil.copy(tmp_path / committed.path, folder / stray)
    (folder / "r3-a1-000000.parquet").write_bytes((tmp_path / committed.path).read_bytes()[:100])
    assert len(list(folder.iterdir())) == 5

    with views.connect(str(tmp_path)) as sql:
        assert sql.sql("SELECT run_id, key FROM images ORDER BY key").fetchall() == [
            ("r1", "a.jpg"),
            ("r1", "b.jpg"),
        ]
        assert sql.sql("SELECT DISTINCT dt FROM images").fetchall() == [("2026-11-25",)]
    tables = list(readers.read_committed(store, store.manifests(), "images", ["key"]))
    assert [t.column("key").to_pylist() for t in tables] == [["a.jpg", "b.jpg"]]


def describe(sql: Any, view: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in sql.execute(f"DESCRIBE {view}").fetchall()]


def test_views_of_an_empty_output_have_the_types_of_committed_files(tmp_path: Path) -> None:
    full, empty = tmp_path / "full", tmp_path / "empty"
    commit_rows(
        RunStore(Destination(str(full))),
        "r1",
        {name: [{"run_id": "r1", "key": "a.jpg"}] for name in all_tables()},
        analyses={"labels": "L1"},
    )
    with views.connect(str(full)) as with_files, views.connect(str(empty)) as without:
        for view in [*all_tables(), "commits"]:
            assert describe(without, view) == describe(with_files, view), view
        assert without.sql("SELECT count(*) FROM images").fetchall() == [(0,)]
        assert with_files.sql("SELECT analyses FROM commits").fetchall() == [
            ([{"analysis": "labels", "settings_digest": "L1"}],)
        ]
        assert [name for name, _ in describe(with_files, "commits")] == COMMITS_SCHEMA.names


def test_the_printed_views_list_committed_files_by_absolute_path(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path / "o'ut")))
    manifest = commit_rows(store, "r1", {"images": [image_row("a.jpg")]})
    sql = views.duckdb_views_sql(store.destination, [manifest])
    assert sql.count("CREATE OR REPLACE VIEW") == len(all_tables()) + 1
    assert f"'{tmp_path}/o''ut/{manifest.files[0].path}'" in sql  # quotes doubled
    duckdb.connect().execute(sql)


def test_athena_ddl_declares_every_column_and_reads_committed_files_only() -> None:
    ddl = views.athena_ddl("s3://results/rek/", "analytics")
    for table, schema in all_tables().items():
        match = re.search(
            rf"CREATE EXTERNAL TABLE IF NOT EXISTS `analytics`.`{table}_files` \((.*?)\n\)", ddl, re.S
        )
        assert match, table
        columns = [line.strip().rstrip(",") for line in match.group(1).strip().splitlines()]
        assert columns == [f"`{f.name}` {views.hive_type(f.type)}" for f in schema]
        assert f"LOCATION 's3://results/rek/{table}/'" in ddl
        assert f"'storage.location.template' = 's3://results/rek/{table}/dt=${{dt}}'" in ddl
        assert (
            f'CREATE OR REPLACE VIEW "analytics"."{table}" AS SELECT * FROM "analytics"."{table}_files" '
            f'WHERE "$path" IN (SELECT file_path FROM "analytics"."committed_files" WHERE table_name = '
            f"'{table}');"
        ) in ddl
    assert (
        "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\nLOCATION 's3://results/rek/_commits/'" in ddl
    )
    for field in COMMITS_SCHEMA:
        assert f"  `{field.name}` {views.hive_type(field.type)}" in ddl


def test_types_map_nested_columns() -> None:
    nested = pa.list_(pa.struct([pa.field("x", pa.int32()), pa.field("when", pa.timestamp("ms", tz="UTC"))]))
    assert views.duckdb_type(nested) == 'STRUCT("x" INTEGER, "when" TIMESTAMP WITH TIME ZONE)[]'
    assert views.hive_type(nested) == "array<struct<x:int,when:timestamp>>"


def test_a_missing_committed_file_is_one_line_naming_the_run_for_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(Destination(str(tmp_path)))
    commit_rows(store, "r1", {"images": [image_row("a.jpg")]})
    manifest = commit_rows(
        store, "r2", {"images": [image_row("b.jpg", "r2")], "runs": [{"run_id": "r2"}]}, committed_at=LATER
    )
    (gone,) = manifest.files_of("images")
    (tmp_path / gone.path).unlink()  # say by a careless gc or a lifecycle rule
    reason = f"rekbatch: error: run r2: committed file {tmp_path / gone.path} is missing"

    for command in (["sql", "-c", "SELECT count(*) FROM images"], ["views"]):
        assert main([*command, "--output", str(tmp_path)]) == 3, command
        captured = capsys.readouterr()
        assert (captured.err.strip(), captured.out) == (reason, ""), command
    with pytest.raises(OutputUnreadable, match=f"^{re.escape(reason.removeprefix('rekbatch: error: '))}$"):
        list(readers.read_committed(store, store.manifests(), "images"))

    (tmp_path / manifest.files_of("runs")[0].path).unlink()
    assert main(["report", "r2", "--output", str(tmp_path), "--to", str(tmp_path / "r.html")]) == 3
    runs_file = tmp_path / manifest.files_of("runs")[0].path
    assert (
        capsys.readouterr().err.strip() == f"rekbatch: error: run r2: committed file {runs_file} is missing"
    )
