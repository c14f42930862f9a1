"""batch.query.shell: statements run in order over the committed views; the prompt; --set variables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import commit_rows

from batch.cli.main import main
from batch.core.errors import ConfigError, QueryFailed
from batch.query import shell as sql_shell
from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.sink import Destination


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Any]:
    rows = [{"run_id": "r1", "bucket": "b", "key": k, "etag": "e", "status": "analysed"} for k in "ab"]
    commit_rows(RunStore(Destination(str(tmp_path))), "r1", {"images": rows})
    with views.connect(str(tmp_path)) as sql:
        yield sql


def scripted(lines: list[str]) -> Any:
    feed = iter(lines)

    def read_line(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return read_line


def test_statements_run_in_order_and_only_row_results_are_shown(connection: Any) -> None:
    shown: list[list[tuple[Any, ...]]] = []
    sql = "SET VARIABLE k = 'b'; CREATE VIEW mine AS FROM images WHERE key = getvariable('k'); FROM mine;"
    sql_shell.run_script(
        connection, sql + " SELECT count(*) FROM images;", {}, lambda r: shown.append(r.fetchall())
    )
    assert [[row[2] for row in shown[0]], shown[1]] == [["b"], [(2,)]]


def test_set_flags_become_variables_and_unset_ones_are_named(connection: Any) -> None:
    query = "SELECT key FROM images WHERE key = getvariable('wanted')"
    shown: list[Any] = []
    sql_shell.run_script(connection, query, {"wanted": "a"}, lambda r: shown.append(r.fetchall()))
    assert shown == [[("a",)]]
    with pytest.raises(ConfigError, match="--set wanted=VALUE"):
        sql_shell.run_script(connection, query, {}, print)
    assert sql_shell.parse_assignments(["word=a=b", "x="]) == {"word": "a=b", "x": ""}
    for bad in ("novalue", "1x=2", "a b=c"):
        with pytest.raises(ConfigError, match="--set"):
            sql_shell.parse_assignments([bad])


def test_a_sql_error_is_one_line(connection: Any) -> None:
    with pytest.raises(QueryFailed) as caught:
        sql_shell.run_script(connection, "SELECT *\nFROM imagez", {}, print)
    assert "imagez" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_prompt_runs_statements_across_lines_and_survives_errors(
    connection: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    shown: list[Any] = []
    lines = [
        ".tables",
        "SELECT key",
        "FROM images ORDER BY key;",
        "SELEC 1;",
        "SELECT 42;",
        ".quit",
        "SELECT 0;",
    ]
    sql_shell.repl(connection, {}, scripted(lines), lambda r: shown.append(r.fetchall()))
    assert shown == [[("a",), ("b",)], [(42,)]]  # nothing after .quit
    printed = capsys.readouterr().out
    assert "images" in printed.splitlines()[0]
    assert "labels" in printed.splitlines()[0]
    assert "error: Parser Error" in printed


def test_the_prompt_ends_at_end_of_input(connection: Any) -> None:
    shown: list[Any] = []
    sql_shell.repl(
        connection, {"n": "7"}, scripted(["SELECT getvariable('n');"]), lambda r: shown.append(r.fetchall())
    )
    assert shown == [[("7",)]]


def test_sql_on_an_output_without_a_committed_run_is_exit_3_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()  # files of a run that never committed
    assert main(["sql", "--output", str(tmp_path), "-c", "SELECT 1"]) == 3
    err = capsys.readouterr().err
    assert err == f"rekbatch: error: no committed run under {tmp_path}: nothing to query (check --output)\n"


def test_repeated_queries_and_files_run_in_the_order_given(
    connection: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "second.sql"
    script.write_text("SELECT 'second' AS step;")
    argv = ["sql", "--output", str(tmp_path), "-c", "SELECT 'first' AS step", "-f", str(script)]
    assert main([*argv, "-c", "SELECT 'third' AS step"]) == 0
    out = capsys.readouterr().out
    assert out.index("first") < out.index("second") < out.index("third")
