"""`rekbatch sql`: DuckDB statements over the views of the committed runs, from a flag, a file or a prompt.

`batch.storage.readers.connect` makes the views (committed files only); this module runs statements on
them and prints their rows with DuckDB's own rendering. Parameterised queries (`docs/queries/`) read
`getvariable('name')`, set with `--set name=value`; a script reading a variable nobody set is refused with
its name rather than quietly returning no rows. The prompt is deliberately tiny (the duckdb package has no
REPL, its CLI may not be installed): statements end with `;`, `.tables` lists the views, `.quit` or
Ctrl-D leaves. For more, `rekbatch views` prints the views' SQL for the `duckdb` CLI.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from batch.core.errors import ConfigError, QueryFailed

#: Statement types whose rows are printed; the others (SET, CREATE, COPY...) run silently.
ROW_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "CALL")
#: Rows printed per result: enough for any report, bounded so a stray `FROM labels` cannot flood a log.
MAX_ROWS = 10_000
PROMPT, CONTINUATION = "rekbatch> ", "     ...> "
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_READ_VARIABLE = re.compile(r"getvariable\(\s*'([^']*)'\s*\)", re.IGNORECASE)
_SET_VARIABLE = re.compile(r"\bSET\s+VARIABLE\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """`--set name=value` flags as a dict; a name that is not an identifier is a ConfigError."""
    variables = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not _NAME.fullmatch(name):
            raise ConfigError(
                f"--set: expected NAME=VALUE with NAME a letter then letters, digits, _: {assignment!r}"
            )
        variables[name] = value
    return variables


def unset_variables(sql: str, variables: Mapping[str, str]) -> list[str]:
    """The variables `sql` reads with getvariable() that neither `variables` nor `sql` itself sets."""
    set_here = {name.lower() for name in _SET_VARIABLE.findall(sql)}
    given = {name.lower() for name in variables}
    read = dict.fromkeys(_READ_VARIABLE.findall(sql))
    return [name for name in read if name.lower() not in set_here | given]


def run_script(connection: Any, sql: str, variables: Mapping[str, str], show: Callable[[Any], None]) -> None:
    """Run every statement of `sql` in order, passing each row-returning one's relation to `show`.

    `show` must consume the relation before returning (print or fetch it): the next statement may
    change what it reads. Raises QueryFailed (one line) on a parse or execution error, ConfigError
    when a variable the script reads is not set.
    """
    import duckdb

    missing = unset_variables(sql, variables)
    if missing:
        flags = " ".join(f"--set {name}=VALUE" for name in missing)
        raise ConfigError(f"the query reads variables nobody set: {flags}")
    try:
        for name, value in variables.items():
            connection.execute(f"SET VARIABLE {name} = ?", [value])
        for statement in duckdb.extract_statements(sql):
            relation = connection.sql(statement)
            if statement.type.name in ROW_STATEMENTS and relation is not None:
                show(relation)
    except duckdb.Error as exc:
        raise QueryFailed(one_line(exc)) from None


def one_line(error: Exception) -> str:
    """DuckDB's message on one line, without its `LINE n: ...` caret excerpt nor the Python traceback
    it appends when a Python reader (an S3 output's files, `batch.aws.s3files`) failed."""
    message = str(error).split("\nLINE ")[0].split(" Detail: Python exception:")[0]
    return " ".join(message.split())


def print_relation(relation: Any) -> None:
    """DuckDB's table rendering, all columns when the output is not a terminal (a log, a pipe)."""
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 100_000
    relation.show(max_rows=MAX_ROWS, max_width=width)


def repl(
    connection: Any,
    variables: Mapping[str, str],
    read_line: Callable[[str], str] = input,
    show: Callable[[Any], None] = print_relation,
) -> None:
    """Read statements until `;`, run them, print their rows; `.tables`, `.help`, `.quit` or Ctrl-D."""
    lines: list[str] = []
    while True:
        try:
            line = read_line(CONTINUATION if lines else PROMPT)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:  # drop the statement being typed, as shells do
            print()
            lines = []
            continue
        command = line.strip()
        if not lines and command.startswith("."):
            if command in (".quit", ".exit"):
                return
            _dot_command(connection, command)
            continue
        lines.append(line)
        if command.endswith(";"):
            try:
                run_script(connection, "\n".join(lines), variables, show)
            except (QueryFailed, ConfigError) as exc:
                print(f"error: {exc}")
            lines = []


def _dot_command(connection: Any, command: str) -> None:
    if command == ".tables":
        print("  ".join(name for (name,) in connection.sql("SHOW TABLES").fetchall()))
    else:
        print(".tables  list the views\n.quit    leave (or Ctrl-D)\nstatements end with ;")
