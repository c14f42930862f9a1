"""batch.core.tables: every schema survives rows -> Parquet -> rows; rows_to_table is strict about names."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import commit_rows, examples
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.analyses.registry import REGISTRY, all_tables
from batch.core.geometry import BoxPlacement
from batch.core.tables import (
    BOX_FIELDS,
    COMMON_FIELDS,
    IMAGES_SCHEMA,
    JOB_TABLES,
    POINT_FIELDS,
    box_fields,
    rows_to_table,
    table_schema,
)
from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, parquet_bytes

_INT_RANGES = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
}


def values_of(data_type: pa.DataType) -> st.SearchStrategy[Any]:
    """Python values pyarrow stores exactly as `data_type` (no NaN: NaN != NaN), or None."""
    if pa.types.is_string(data_type):
        inner: st.SearchStrategy[Any] = st.text(max_size=8)
    elif data_type in _INT_RANGES:
        low, high = _INT_RANGES[data_type]
        inner = st.integers(low, high)
    elif pa.types.is_float64(data_type):
        inner = st.floats(allow_nan=False)
    elif pa.types.is_boolean(data_type):
        inner = st.booleans()
    elif pa.types.is_timestamp(data_type):
        inner = st.datetimes(
            min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
    elif pa.types.is_list(data_type):
        inner = st.lists(values_of(data_type.value_type), max_size=3)
    elif pa.types.is_struct(data_type):
        inner = st.fixed_dictionaries({f.name: values_of(f.type) for f in data_type})
    else:
        raise NotImplementedError(str(data_type))
    return st.none() | inner


def rows_of(schema: pa.Schema) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Rows with any subset of the schema's columns (a missing key means null)."""
    row = st.fixed_dictionaries({}, optional={f.name: values_of(f.type) for f in schema})
    return st.lists(row, max_size=4)


def through_parquet(table: pa.Table) -> pa.Table:
    """The bytes the job writes (`batch.storage.sink.parquet_bytes`, zstd as by default), read back."""
    return pq.read_table(io.BytesIO(parquet_bytes(table, "zstd")))


@pytest.mark.parametrize("name", list(all_tables()))
def test_rows_round_trip_through_parquet(name: str) -> None:
    schema = all_tables()[name]

    @settings(max_examples=examples(500), deadline=None)
    @given(rows_of(schema))
    def round_trip(rows: list[dict[str, Any]]) -> None:
        back = through_parquet(rows_to_table(rows, schema))
        assert back.schema.equals(schema)
        expected = [{f.name: row.get(f.name) for f in schema} for row in rows]
        assert back.to_pylist() == expected

    round_trip()


def test_every_table_starts_with_the_common_columns() -> None:
    for name, schema in all_tables().items():
        assert schema.names[:4] == ["run_id", "bucket", "key", "etag"], name
        assert len(set(schema.names)) == len(schema.names), name


def test_all_tables_holds_the_job_tables_and_each_analysis_table() -> None:
    expected = set(JOB_TABLES).union(*(analysis.tables for analysis in REGISTRY.values()))
    assert set(all_tables()) == expected
    assert {
        "images",
        "errors",
        "runs",
        "labels",
        "label_instances",
        "faces",
        "text",
        "moderation",
    } <= expected
    assert "celebrities" in expected


def test_rows_to_table_rejects_a_misspelt_column() -> None:
    with pytest.raises(ValueError, match=r"row 1 .*'stauts'"):
        rows_to_table([{"status": "analysed"}, {"stauts": "analysed"}], IMAGES_SCHEMA)


def test_rows_to_table_fills_missing_columns_with_null() -> None:
    table = rows_to_table([{"key": "a.jpg", "exif_orientation": 6}], IMAGES_SCHEMA)
    assert table.schema.equals(IMAGES_SCHEMA)
    row = table.to_pylist()[0]
    assert (row["key"], row["exif_orientation"], row["status"], row["analyses"]) == ("a.jpg", 6, None, None)


def test_rows_to_table_with_no_rows_keeps_the_schema() -> None:
    table = rows_to_table([], IMAGES_SCHEMA)
    assert table.num_rows == 0
    assert table.schema.equals(IMAGES_SCHEMA)


def test_rows_to_table_rejects_a_value_of_the_wrong_type() -> None:
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        rows_to_table([{"stored_width": "wide"}], IMAGES_SCHEMA)


def test_box_fields_prefix_and_types() -> None:
    names = [f.name for f in box_fields("source_")]
    assert names[0] == "source_box_left"
    assert names[-1] == "source_stored_box_height_px"
    assert [f.type for f in BOX_FIELDS] == [pa.float64()] * 4 + [pa.int32()] * 8


def test_table_schema_rejects_a_duplicate_column() -> None:
    with pytest.raises(ValueError, match="key"):
        table_schema([pa.field("key", pa.string())])


def test_common_fields_are_strings() -> None:
    assert [(f.name, f.type) for f in COMMON_FIELDS] == [
        ("run_id", pa.string()),
        ("bucket", pa.string()),
        ("key", pa.string()),
        ("etag", pa.string()),
    ]


def test_timestamps_are_utc_milliseconds() -> None:
    assert IMAGES_SCHEMA.field("last_modified").type == pa.timestamp("ms", tz="UTC")
    assert JOB_TABLES["runs"].field("started_at").type == pa.timestamp("ms", tz="UTC")


# --- docs/tables.md -------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
_SHARED = {f.name for f in COMMON_FIELDS} | {f.name for f in BOX_FIELDS}


def doc_section(table: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(f"## `{table}`")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


@pytest.mark.parametrize("name", list(all_tables()))
def test_docs_describe_every_column(name: str) -> None:
    section = doc_section(name)
    schema = all_tables()[name]
    for column in schema.names:
        if column not in _SHARED:
            assert f"| `{column}` |" in section, f"{name}.{column} is not documented"
    if _SHARED.intersection(schema.names) - {f.name for f in COMMON_FIELDS}:
        assert "| box columns |" in section


def sample_row(schema: pa.Schema) -> dict[str, Any]:
    """A row that joins across tables (same run, bucket, key) with a few meaningful values."""
    row: dict[str, Any] = {"run_id": "run-1", "bucket": "b", "key": "a.jpg", "etag": "e"}
    fixed = {
        "status": "analysed",
        "type": "WORD",
        "error_code": "InvalidImageFormatException",
        "name": "Person",
        "analyses": ["labels"],
        "summary": "without_required",
        "body_part": "HEAD",
        "equipment_type": "HEAD_COVER",
        "person_id": 0,
    }
    row.update({k: v for k, v in fixed.items() if k in schema.names})
    if "face_index" in schema.names:
        row["face_index"] = 0
    if "landmarks" in schema.names:
        row["landmarks"] = [{"type": "nose", "x": 0.5, "y": 0.5, "x_px": 5, "y_px": 5}]
    return row


def test_docs_example_queries_run_on_a_committed_sample_dataset(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    store = RunStore(Destination(str(tmp_path)))
    commit_rows(store, "run-1", {name: [sample_row(schema)] for name, schema in all_tables().items()})
    text = DOCS.read_text(encoding="utf-8").split("## Example queries (DuckDB, over the views)")[1]
    sql = text[text.index("```sql") + len("```sql") : text.index("```", text.index("```sql") + 6)]
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert len(statements) == 11
    with views.connect(str(tmp_path)) as connection:
        results = [connection.execute(statement).fetchall() for statement in statements]
    assert results[0] == [("Person", 1)]
    assert results[1] == [("a.jpg", None, None, 1)]
    assert results[2] == [("InvalidImageFormatException", None, 1)]
    assert results[5] == [("a.jpg", "Person", None)]
    assert [row[0] for row in results[7]] == ["run-1"]
    assert results[9] == [("a.jpg", 1)]
    assert results[10] == [("a.jpg", 0, "HEAD_COVER", None, None, None)]


def test_geometry_columns_are_the_schema_columns() -> None:
    placement = BoxPlacement(stored_width=10, stored_height=20, orientation=6, response_frame="stored")
    box = {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4}
    assert list(placement.box_columns(box)) == [f.name for f in BOX_FIELDS]
    assert list(placement.box_columns(None)) == [f.name for f in BOX_FIELDS]
    assert list(placement.point_columns(0.5, 0.5)) == [f.name for f in POINT_FIELDS]
