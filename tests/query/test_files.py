"""`rekbatch files`: the committed files of a table, and the documented recipes that read only them with
pyarrow, polars and pandas (docs/tables.md, "Reading with pyarrow, polars, pandas or Spark")."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import commit_rows

from batch.cli.main import main
from batch.storage.commits import RunStore
from batch.storage.sink import Destination


def label(run_id: str, key: str, name: str) -> dict[str, object]:
    return {"run_id": run_id, "bucket": "b", "key": key, "etag": "e", "name": name, "confidence": 90.0}


@pytest.fixture
def output(tmp_path: Path) -> str:
    """Two committed runs on two days, and the files of a run that never committed beside them."""
    store = RunStore(Destination(str(tmp_path)))
    commit_rows(store, "r1", {"labels": [label("r1", "a.jpg", "Cat")]}, dt="2026-11-24")
    commit_rows(
        store,
        "r2",
        {"labels": [label("r2", "b.jpg", "Dog"), label("r2", "c.jpg", "Fish")]},
        dt="2026-11-25",
        committed_at=datetime(2026, 11, 25, 3, tzinfo=UTC),
    )
    committed = next((tmp_path / "labels" / "dt=2026-11-25").glob("*.parquet"))
    shutil.copy(committed, committed.with_name("crashed-a1-000000.parquet"))  # never committed
    return str(tmp_path)


def committed_files(output: str, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    assert main(["files", "labels", "--output", output, *flags]) == 0
    return capsys.readouterr().out


def test_files_lists_the_committed_files_only_oldest_commit_first(
    output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = committed_files(output, capsys).split()
    assert [Path(f).relative_to(output).parts[:2] for f in files] == [
        ("labels", "dt=2026-11-24"),
        ("labels", "dt=2026-11-25"),
    ]
    assert not any("crashed" in f for f in files)
    listed = json.loads(committed_files(output, capsys, "--json"))
    assert [(f["run_id"], f["dt"], f["rows"]) for f in listed] == [
        ("r1", "2026-11-24", 1),
        ("r2", "2026-11-25", 2),
    ]
    assert [f["location"] for f in listed] == files


def test_the_pyarrow_and_pandas_recipes_read_the_committed_rows_with_dt(
    output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = committed_files(output, capsys).split()
    # The recipe, as documented:
    import pyarrow.dataset as ds

    dataset = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=output)
    table = dataset.to_table()
    frame = table.to_pandas()  # pandas: through pyarrow, the same files
    assert sorted(zip(table["name"].to_pylist(), table["dt"].to_pylist(), strict=True)) == [
        ("Cat", "2026-11-24"),
        ("Dog", "2026-11-25"),
        ("Fish", "2026-11-25"),
    ]
    assert sorted(frame["name"]) == ["Cat", "Dog", "Fish"]


def test_the_polars_recipe_reads_the_committed_rows_with_dt_as_a_date(
    output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = committed_files(output, capsys).split()
    # The recipe, as documented:
    import polars as pl

    frame = pl.read_parquet(files, hive_partitioning=True)
    assert frame.schema["dt"] == pl.Date
    assert sorted(zip(frame["name"].to_list(), map(str, frame["dt"].to_list()), strict=True)) == [
        ("Cat", "2026-11-24"),
        ("Dog", "2026-11-25"),
        ("Fish", "2026-11-25"),
    ]


def test_files_of_an_unknown_table_or_an_output_without_runs_say_so_in_one_line(
    tmp_path: Path, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["files", "lables", "--output", output]) == 2
    assert capsys.readouterr().err.startswith(
        "rekbatch: error: files: unknown table 'lables' (known: images,"
    )
    assert main(["files", "labels", "--output", str(tmp_path / "empty")]) == 3
    assert capsys.readouterr().err == (
        f"rekbatch: error: no committed run under {tmp_path / 'empty'}: no files to read (check --output)\n"
    )
