"""The progress display end to end: the CLI on the local stack under an 80-column pseudo-terminal, and
with stderr not a terminal (quiet; with -v a progress line logged at INFO)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "progress-input", "photos/"
COLUMNS = 80
#: One batch holds the whole sample set: a display redrawn only when a batch ends shows nothing before
#: the end. 5 calls/s and 300 ms per answer make the run's calls last about 7 s.
ENV = {"REKBATCH_DASK__BATCH_SIZE": "64"}
ARGS = ("--analyses", "labels", "--tps", "5")
PROGRESS = re.compile(r"^(\d+)/(\d+)(\+?) images")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tps=5, extra_args=["--latency-ms", "300"]) as local:
        seed_samples(local.s3_client(), BUCKET, PREFIX, tmp_path_factory.mktemp("samples"))
        yield local


def command(out: Path, *extra: str) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    config, summary_json = str(ROOT / "configs" / "local.toml"), str(out.parent / "summary.json")
    return [sys.executable, "-m", "batch", "run", "--config", config, "--input", f"s3://{BUCKET}/{PREFIX}",
            "--output", str(out), "--summary-json", summary_json, *ARGS, *extra]  # fmt: skip


def environment(stack: LocalStack, **more: str) -> dict[str, str]:
    env = {**os.environ, **stack.env, **ENV, **more}
    env.pop("COLUMNS", None)  # the terminal's size comes from the terminal
    return env


def run_in_terminal(cmd: list[str], env: dict[str, str], columns: int) -> tuple[int, str]:
    """Run `cmd` with stderr (and stdin) on a pseudo-terminal `columns` wide; its exit code and all it
    wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    written = b""
    try:
        while chunk := _read(master):
            written += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=300), written.decode()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: every writer has closed the terminal
        return b""


class Screen:
    """What a terminal `columns` wide shows of what was written: its lines, each state of a line before
    a carriage return or a newline moved on (the frames of the progress line), and how often a line
    wrapped because a write went past the last column."""

    def __init__(self, written: str, columns: int) -> None:
        self.lines: list[str] = []
        self.frames: list[str] = []
        self.wraps = 0
        line: list[str] = []
        col = 0
        for piece in re.findall(r"\x1b\[K|\x1b\[[0-9;?]*[A-Za-z]|\r|\n|.", written, re.DOTALL):
            if piece == "\x1b[K":
                del line[col:]
            elif piece.startswith("\x1b"):
                raise AssertionError(f"unexpected control sequence {piece!r}")
            elif piece in "\r\n":
                if line:
                    self.frames.append("".join(line))
                col = 0
                if piece == "\n":
                    self.lines.append("".join(line))
                    line = []
            else:
                if col == columns:  # the terminal wraps to a new line
                    self.wraps += 1
                    self.lines.append("".join(line))
                    line, col = [], 0
                line[col : col + 1] = [piece]
                col += 1
        if line:
            self.lines.append("".join(line))


def summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out.parent / "summary.json").read_text()))


def test_on_an_80_column_terminal_every_line_fits_and_the_progress_moves_within_a_batch(
    stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, written = run_in_terminal(command(out), environment(stack), COLUMNS)
    assert code == 0, written
    screen = Screen(written, COLUMNS)
    assert screen.wraps == 0, screen.lines
    assert all(len(line) < COLUMNS for line in screen.lines + screen.frames)
    assert any(line.startswith("Dask dashboard: ") for line in screen.lines)
    progress = [(frame, PROGRESS.match(frame)) for frame in screen.frames if PROGRESS.match(frame)]
    total = summary(out)["images"]["listed"]
    during = {frame for frame, m in progress if m and 0 < int(m.group(1)) < total}
    # Redrawn from per-image events about once a second while the only batch runs (about 7 s).
    assert len(during) >= 3, progress
    assert {int(m.group(1)) for _, m in progress if m} >= {total}
    assert progress[-1][0].startswith(f"{total}/{total} images")  # done of the total, once listed
    assert re.search(r"\d+ rejected, \d+ failed", progress[-1][0])
    assert any("DetectLabels" in frame for frame, _ in progress)  # the API's name, not `Labels`
    assert not re.search(r"(?<!Detect)Labels", written)


def test_with_stderr_not_a_terminal_only_the_documented_lines_and_with_v_a_logged_progress_line(
    stack: LocalStack, tmp_path: Path
) -> None:
    quiet = subprocess.run(command(tmp_path / "quiet" / "out"), env=environment(stack), capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    run_id = summary(tmp_path / "quiet" / "out")["run_id"]
    assert quiet.stderr.splitlines() == [f"rekbatch: run {run_id}: attempt 1 started"]

    env = environment(stack, REKBATCH_RUN__PROGRESS_LOG_SECONDS="2")
    verbose = subprocess.run([*command(tmp_path / "verbose" / "out"), "-v"], env=env, capture_output=True,
                             text=True, timeout=300, check=False)  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    logged = [line for line in verbose.stderr.splitlines() if " INFO batch.run.progress: progress: " in line]
    assert len(logged) >= 2, verbose.stderr
    shape = re.compile(r"progress: \[\d+:\d\d\] \d+/\d+\+? images( \d+%)?, \d+ rejected, \d+ failed")
    assert all(shape.search(line) for line in logged), logged
    assert any("calls/s DetectLabels " in line for line in logged)
    assert "\r" not in verbose.stderr
    assert "\x1b" not in verbose.stderr
