"""`rekbatch athena-ddl`: every statement parses as Athena SQL and declares the documented schema.

sqlglot's `athena` dialect reads DDL as Hive (Athena's DDL engine) and queries as Trino (its query
engine), as Athena does; the `hive` dialect must read the DDL too. A statement sqlglot cannot parse
comes back as an opaque `Command` (with a warning): that fails here, so the checks below see real trees.
The documented schema is `batch.analyses.all_tables()` (tests/test_tables.py checks docs/tables.md
documents every column of it) and the manifest's `COMMITS_SCHEMA`.
"""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from batch.analyses.registry import all_tables
from batch.core.manifest import COMMITS_SCHEMA
from batch.core.tables import PARTITION_COLUMN

sqlglot = pytest.importorskip("sqlglot")
exp = sqlglot.exp

#: The CLI runs in a subprocess that starts no server: allowed by `make test-fast` (--forbid-servers).
pytestmark = pytest.mark.offline_subprocess

LOCATION = "s3://results/rek/"


@pytest.fixture(scope="module")
def printed_ddl() -> str:
    """What `rekbatch athena-ddl` prints, run once for the module (the tests read the same output)."""
    command = [sys.executable, "-m", "batch", "athena-ddl", "--location", LOCATION, "--database", "analytics"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def statements(ddl: str, dialect: str) -> list[exp.Expression]:
    parsed = [statement for statement in sqlglot.parse(ddl, read=dialect) if statement is not None]
    assert not [s for s in parsed if isinstance(s, exp.Command)], "sqlglot fell back to an opaque Command"
    return parsed


def tables(parsed: list[exp.Expression]) -> dict[str, exp.Create]:
    return {s.this.this.name: s for s in parsed if isinstance(s, exp.Create) and s.kind == "TABLE"}


def columns(create: exp.Create) -> list[tuple[str, exp.DataType]]:
    return [(c.name, c.args["kind"]) for c in create.this.expressions if isinstance(c, exp.ColumnDef)]


def table_properties(create: exp.Create) -> dict[str, str]:
    found = {}
    for prop in create.args["properties"].expressions:
        if type(prop) is exp.Property:  # the subclasses are LOCATION, PARTITIONED BY...
            found[prop.name] = prop.args["value"].name
    return found


#: Athena's names of the scalar types (docs.aws.amazon.com/athena/latest/ug/data-types.html), written
#: out here rather than taken from `views.hive_type`, so a wrong mapping there fails.
ATHENA_SCALARS = {
    pa.string(): "STRING",
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
}


def athena_type(data_type: pa.DataType) -> str:
    if pa.types.is_list(data_type):
        return f"ARRAY<{athena_type(data_type.value_type)}>"
    if pa.types.is_struct(data_type):
        return "STRUCT<" + ", ".join(f"{f.name}: {athena_type(f.type)}" for f in data_type) + ">"
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMP"
    return ATHENA_SCALARS[data_type]


def expected_columns(schema: pa.Schema) -> list[tuple[str, exp.DataType]]:
    return [(f.name, exp.DataType.build(athena_type(f.type), dialect="hive")) for f in schema]


@pytest.mark.parametrize("dialect", ["athena", "hive"])
def test_the_ddl_first_creates_its_database_if_missing(dialect: str, printed_ddl: str) -> None:
    first = statements(printed_ddl, dialect)[0]
    assert isinstance(first, exp.Create)
    assert (first.kind, first.args.get("exists"), first.this.name) == ("DATABASE", True, "analytics")


@pytest.mark.parametrize("dialect", ["athena", "hive"])
def test_every_table_declares_every_documented_column_with_its_type(dialect: str, printed_ddl: str) -> None:
    ddl = printed_ddl
    parsed = tables(statements(ddl, dialect) if dialect == "athena" else hive_statements(ddl))
    assert sorted(parsed) == sorted([*(f"{name}_files" for name in all_tables()), "commits"])
    for name, schema in all_tables().items():
        assert columns(parsed[f"{name}_files"]) == expected_columns(schema), name
    assert columns(parsed["commits"]) == expected_columns(COMMITS_SCHEMA)


def hive_statements(ddl: str) -> list[exp.Expression]:
    """The CREATE TABLE statements only: the views are Trino SQL (`"$path"`, UNNEST), not Hive."""
    tables_only = [s for s in ddl.split(";\n") if s.strip().startswith("CREATE EXTERNAL TABLE")]
    return statements(";\n".join(tables_only), "hive")


def test_each_table_is_partitioned_by_dt_with_projection_over_its_own_folder(printed_ddl: str) -> None:
    parsed = tables(statements(printed_ddl, "athena"))
    for name in all_tables():
        create = parsed[f"{name}_files"]
        properties = create.args["properties"]
        (partitioned,) = list(properties.find_all(exp.PartitionedByProperty))
        assert [(c.name, c.args["kind"].sql("hive")) for c in partitioned.this.expressions] == [
            (PARTITION_COLUMN, "STRING")
        ]
        assert properties.find(exp.LocationProperty).this.name == f"{LOCATION}{name}/"
        projection = table_properties(create)
        assert projection["projection.enabled"] == "true"
        assert projection[f"projection.{PARTITION_COLUMN}.type"] == "date"
        assert projection[f"projection.{PARTITION_COLUMN}.format"] == "yyyy-MM-dd"
        assert projection["storage.location.template"] == f"{LOCATION}{name}/{PARTITION_COLUMN}=${{dt}}"


def test_each_view_reads_its_table_through_the_committed_files(printed_ddl: str) -> None:
    parsed = statements(printed_ddl, "athena")
    views = {s.this.name: s for s in parsed if isinstance(s, exp.Create) and s.kind == "VIEW"}
    assert sorted(views) == sorted([*all_tables(), "committed_files"])
    for name in all_tables():
        read = {t.name for t in views[name].expression.find_all(exp.Table)}
        assert read == {f"{name}_files", "committed_files"}, name
    assert {t.name for t in views["committed_files"].expression.find_all(exp.Table)} == {"commits"}
