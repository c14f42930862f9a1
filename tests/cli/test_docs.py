"""The user documentation says what the code does: every `rekbatch ...` command line in README.md and
docs/ names a command and flags that exist, and the README's exit-code table is `RUN_EXIT_CODES`."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.cli.main import RUN_EXIT_CODES, build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    ROOT / "configs" / "prod.example.toml",
]
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "<"}


def snippets(text: str) -> Iterator[str]:
    """The lines of fenced code blocks (a line ending in a backslash joined with the next) and the
    inline code spans of the prose (a span may cross a line break)."""
    prose: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if block is not None:
                yield from re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines()
            block = [] if block is None else None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line.lstrip("# ") if line.startswith("#") else line)
    yield from re.findall(r"`([^`]+)`", " ".join(prose))


def command_lines(snippet: str) -> Iterator[list[str]]:
    """The arguments after each `rekbatch` (or `python -m batch`) in a snippet, up to a shell operator;
    a `NAME="..."` token holding a command (Airflow's bash_command=) is searched too."""
    try:
        tokens = shlex.split(snippet, comments=True)
    except ValueError:
        tokens = snippet.split()
    for i, word in enumerate(tokens):
        if "=" in word.split(" ", 1)[0] and " " in word:
            yield from command_lines(word.split("=", 1)[1])
        if word == "rekbatch" or word.endswith("/rekbatch") or tokens[i - 1 : i + 1] == ["-m", "batch"]:
            rest = tokens[i + 1 :]
            end = next((k for k, t in enumerate(rest) if t in SHELL_OPERATORS or t.startswith(">")), None)
            yield rest[:end]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def problems(args: list[str]) -> list[str]:
    """What in one documented command line the parser does not know: a command or a flag."""
    parser, path = build_parser(), ["rekbatch"]
    args = [a.strip("[]") for a in args if a.strip("[]")]
    while (choices := _subcommands(parser)) and args and not args[0].startswith("-"):
        if args[0] not in choices:
            if all(part in choices for part in args[0].split("|")):  # `collection list|describe|...`
                return []
            return [f"{' '.join(path)}: no command {args[0]!r}"]
        path.append(args[0])
        parser = choices[args.pop(0)]
    known = parser._option_string_actions
    flags = [a.split("=", 1)[0] for a in args if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", a)]
    return [f"{' '.join(path)}: no flag {flag}" for flag in flags if flag not in known]


def documented_commands() -> Iterator[tuple[str, list[str]]]:
    for document in DOCUMENTS:
        for snippet in snippets(document.read_text(encoding="utf-8")):
            for args in command_lines(snippet):
                yield f"{document.relative_to(ROOT)}: {snippet}", args


def test_every_documented_command_and_flag_exists() -> None:
    found = list(documented_commands())
    assert len(found) >= 40  # the README and docs/ show that many: the search itself works
    assert {where: problems(args) for where, args in found if problems(args)} == {}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rekbatch run --config prod.toml --made-up-flag", ["rekbatch run: no flag --made-up-flag"]),
        ("rekbatch frobnicate --output x", ["rekbatch: no command 'frobnicate'"]),
        (
            "rekbatch collection describe NAME --output x --jsn",
            ["rekbatch collection describe: no flag --jsn"],
        ),
        ("rekbatch sql --output DEST [-c QUERY] [-f FILE] ... [--set NAME=VALUE]", []),
        (
            "cd /srv && .venv/bin/rekbatch run --tps=5 --bogus 2>&1 | mail -s 'rekbatch failed'",
            ["rekbatch run: no flag --bogus"],
        ),
        (
            'bash_command="rekbatch run --config ... || rekbatch gc --older HOURS"',
            ["rekbatch gc: no flag --older"],
        ),
        ("python -m batch views --output x  # --not-a-flag in a comment", []),
    ],
)
def test_a_made_up_command_or_flag_is_found(line: str, expected: list[str]) -> None:
    assert [p for args in command_lines(line) for p in problems(args)] == expected


def test_the_readme_exit_code_table_is_the_one_run_prints() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| \*\*(\d+)\*\* \|", readme, re.MULTILINE)
    printed = re.findall(r"^  (\d+) ", RUN_EXIT_CODES, re.MULTILINE)
    assert documented == printed
