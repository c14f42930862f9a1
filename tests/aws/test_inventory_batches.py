"""The run's inventory path (`file_batches`: Arrow selection) selects exactly what the per-row path
(`listed_object` then `is_selected`, row by row) does, on inventories in AWS's three formats with odd
keys (URL-encoded in CSV, non-ASCII, folders, upper-case suffixes), versions, delete markers and
rows the run cannot use."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch.aws.inventory import _checked, _record_batches, file_batches
from batch.config.model import InputConfig
from batch.core.inventory import InventoryInvalid, InventoryManifest, listed_object, schema_columns
from batch.core.inventory_batches import current_objects
from batch.core.selection import is_selected
from batch.run.key_order import sorted_batches, sorted_by_key
from local_stack.inventory import _FIELDS, _data_file, encode_key, file_schema

T0 = datetime(2026, 11, 25, 3, 4, 5, 678000, tzinfo=UTC)
names = st.text(
    st.sampled_from(" +%/~*é😀İ") | st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    max_size=8,
)
keys = st.builds(
    lambda head, name, suffix: head + name + suffix,
    st.sampled_from(["", "p/", "p/q/", "P/", "p"]),
    names,
    st.sampled_from([".jpg", ".JPeg", ".png", ".txt", "/", ".gİf", ".tiff", ""]),
)
objects = st.fixed_dictionaries(
    {
        "Key": keys,
        "Size": st.integers(0, 10**12),
        "LastModifiedDate": st.integers(0, 10**9).map(lambda ms: T0 + timedelta(milliseconds=ms)),
        "ETag": st.sampled_from(["0123abcd", "0123abcd-2", "e"]),
        "VersionId": st.sampled_from(["v1", "v2", "null"]),
        "IsLatest": st.booleans(),
        "IsDeleteMarker": st.booleans(),
        "StorageClass": st.just("STANDARD"),
    }
)
filters = st.sampled_from(
    [
        InputConfig(),
        InputConfig(include=("q/*", "*.JPG"), exclude=("*é*",)),
        InputConfig(include=("?/*", "x*"), exclude=("*/*/*",)),
        InputConfig(exclude=("[!a-m]*",)),  # a pattern left to the per-row code
    ]
)


def per_row(path: Path, manifest: InventoryManifest, prefix: str, input_filter: InputConfig) -> list:
    """The reference, the run's path before: every row through `listed_object`, then `is_selected`,
    one at a time, then the sort (which reads a time without a zone as UTC, as the run always did)."""
    out = []
    for batch in _checked(_record_batches(path, manifest), manifest):
        for row in batch.rename_columns([n.lower() for n in batch.schema.names]).to_pylist():
            try:
                obj = listed_object(row, url_encoded=manifest.file_format == "CSV")
            except InventoryInvalid as exc:
                raise InventoryInvalid(f"FILE: {exc}") from None
            if obj is not None and is_selected(obj, prefix, input_filter):
                out.append(obj)
    return list(sorted_by_key(out))


def vectorised(path: Path, manifest: InventoryManifest, prefix: str, input_filter: InputConfig) -> list:
    return [
        obj
        for batch in file_batches(path, manifest, prefix, input_filter, where="FILE")
        for obj in sorted_batches([batch])  # each batch as the sort gives its objects back
    ]


def outcome(read: Any, *args: Any) -> Any:
    try:
        return sorted(read(*args), key=lambda o: (o.key, o.etag, o.size, o.last_modified))
    except InventoryInvalid as exc:
        return ("refused", str(exc))


def manifest_for(fmt: str, fields: list) -> InventoryManifest:
    return InventoryManifest("b", "d", fmt, schema_columns(fmt, file_schema(fmt, fields)), ())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["CSV", "ORC", "Parquet"]),
    st.booleans(),
    st.lists(objects, max_size=30),
    st.tuples(st.sampled_from(["", "p/", "P/"]), filters),
)
def test_the_arrow_selection_is_the_per_row_selection(
    tmp_path: Path, fmt: str, all_versions: bool, rows: list, selection: tuple[str, InputConfig]
) -> None:
    prefix, input_filter = selection
    fields = [f for f in _FIELDS if all_versions or f[0] not in ("VersionId", "IsLatest", "IsDeleteMarker")]
    for row in rows:
        if all_versions and row["IsDeleteMarker"]:
            row["Size"] = row["ETag"] = None  # a delete marker has neither
    path = tmp_path / f"data-{fmt}"
    path.write_bytes(_data_file(fmt, fields, rows))
    manifest = manifest_for(fmt, fields)
    expected = outcome(per_row, path, manifest, prefix, input_filter)
    assert outcome(vectorised, path, manifest, prefix, input_filter) == expected


#: CSV values as text that AWS never writes but a file may hold: the per-row code decides them.
ODD = {
    "key": ["caf%E9.jpg", "a%zz.jpg", "a%2.jpg", "%%41.jpg", "a+b%2Bc.JPG", "%C3%A9.png", "", "%C3.jpg"],
    "is_latest": ["TRUE", "false", "", "True"],
    "is_delete_marker": ["true", "", "tRue"],
    "size": ["", "12a", "+5", " 7", "1_0", "-1"],
    "last_modified_date": [
        "2026-11-25T03:04:05Z", "2026-11-25T03:04:05.1Z", "yesterday", "2026-11-25T03:04:05+02:00",
        "2026-11-25 03:04:05.678Z", "2026-11-25T03:04:05.678", "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-25T03:04:05.1234567Z",
    ],
    "e_tag": ['"0123abcd-2"', "", '""'],
}  # fmt: skip
#: Rows as AWS writes them, each with at most one value from `ODD`.
GOOD = {
    "is_latest": "true", "is_delete_marker": "false", "size": "1234",
    "last_modified_date": "2026-11-25T03:04:05.678Z", "e_tag": "0123abcd",
}  # fmt: skip
csv_rows = st.builds(
    lambda key, odd: GOOD | {"key": encode_key(key)} | dict([odd] if odd else []),
    keys,
    st.none() | st.sampled_from([(field, value) for field, values in ODD.items() for value in values]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(csv_rows, max_size=4), filters)
def test_odd_csv_values_are_read_as_the_per_row_code_reads_them(
    tmp_path: Path, rows: list, input_filter: InputConfig
) -> None:
    path = csv_file(tmp_path, rows)
    manifest = InventoryManifest("b", "d", "CSV", CSV_COLUMNS, ())
    expected = outcome(per_row, path, manifest, "", input_filter)
    assert outcome(vectorised, path, manifest, "", input_filter) == expected


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, values in ODD.items() for v in values])
def test_each_odd_csv_value_next_to_a_good_row_is_read_as_the_per_row_code_reads_it(
    tmp_path: Path, field: str, value: str
) -> None:
    good = GOOD | {"key": "p%2Fa+b.jpg"}
    path = csv_file(tmp_path, [good, good | {field: value}])
    manifest = InventoryManifest("b", "d", "CSV", CSV_COLUMNS, ())
    expected = outcome(per_row, path, manifest, "", InputConfig())
    assert outcome(vectorised, path, manifest, "", InputConfig()) == expected


CSV_COLUMNS = ("bucket", "key", "is_latest", "is_delete_marker", "size", "last_modified_date", "e_tag")


def csv_file(folder: Path, rows: list[dict[str, str]]) -> Path:
    """The rows as a gzipped CSV data file, every value quoted, as AWS writes one."""
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for row in rows:
        writer.writerow(["b", *(row[c] for c in CSV_COLUMNS[1:])])
    path = folder / "data.csv.gz"
    path.write_bytes(gzip.compress(text.getvalue().encode()))
    return path


@pytest.mark.parametrize("fmt", ["CSV", "ORC", "Parquet"])
def test_a_large_file_is_selected_in_arrow_batches(tmp_path: Path, fmt: str) -> None:
    fields = list(_FIELDS)
    rows = [
        {"Bucket": "b", "Key": f"p/é {i}.jpg" if i % 3 else f"p/{i}.txt", "Size": i, "LastModifiedDate": T0,
         "ETag": f"e{i}", "VersionId": "v", "IsLatest": i % 5 != 0, "IsDeleteMarker": False}
        for i in range(30_000)
    ]  # fmt: skip
    path = tmp_path / "data"
    path.write_bytes(_data_file(fmt, fields, rows))
    manifest = manifest_for(fmt, fields)
    batches = list(file_batches(path, manifest, "p/", InputConfig()))
    assert sum(b.num_rows for b in batches) == len(per_row(path, manifest, "p/", InputConfig())) == 16_000
    for raw in _record_batches(path, manifest):  # what AWS writes is read in Arrow, not row by row
        assert current_objects(raw, url_encoded=fmt == "CSV") is not None


@pytest.mark.parametrize("fmt", ["ORC", "Parquet"])
def test_a_data_file_without_a_column_its_manifest_names_is_refused_in_one_line(
    tmp_path: Path, fmt: str
) -> None:
    fields = [f for f in _FIELDS if f[0] not in ("VersionId", "IsLatest", "IsDeleteMarker")]
    rows = [{"Bucket": "b", "Key": "p/a.jpg", "Size": 1, "LastModifiedDate": T0, "ETag": "e"}]
    path = tmp_path / "data"
    path.write_bytes(_data_file(fmt, [f for f in fields if f[0] != "ETag"], rows))
    with pytest.raises(InventoryInvalid, match=r"^FILE: the data file has no column e_tag$"):
        list(file_batches(path, manifest_for(fmt, fields), "p/", InputConfig(), where="FILE"))


def test_an_empty_csv_data_file_holds_no_rows(tmp_path: Path) -> None:
    """The report of an empty bucket: a data file with no rows (as `local_stack.inventory` writes it)."""
    manifest = InventoryManifest("b", "d", "CSV", CSV_COLUMNS, ())
    assert list(file_batches(csv_file(tmp_path, []), manifest, "", InputConfig())) == []


def test_a_full_temp_folder_ends_the_read_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from batch.aws import inventory
    from batch.core.errors import InputUnreachable
    from batch.core.inventory import InventoryFile

    def full(*_args: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inventory, "download", full)
    with pytest.raises(
        InputUnreachable, match=r"s3://d/k: cannot copy the data file to .*: No space left on device$"
    ):
        inventory._download(None, "d", InventoryFile("k", 1, "m"), tmp_path / "data")


def test_a_damaged_data_file_is_named_in_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(b'"b","a.jpg","1"\n')[:-8])  # truncated
    manifest = InventoryManifest("b", "d", "CSV", CSV_COLUMNS, ())
    with pytest.raises(InventoryInvalid, match=r"^run.inventory: s3://d/k: a CSV data file: "):
        list(file_batches(path, manifest, "", InputConfig(), where="run.inventory: s3://d/k"))
