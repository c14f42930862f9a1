"""The processes of a job under test, read from Linux's /proc: its Dask worker processes, which of them
talk to a server, and when one is gone. For tests that kill them; and what a run prints on stderr."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def worker_processes(parent: int) -> list[int]:
    """Dask worker processes started by `parent` (multiprocessing's spawn), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def talks_to(pid: int, url: str) -> bool:
    """Whether process `pid` holds a TCP connection to the server at `url` (Linux /proc): a worker's
    boto3 client connects on its first call."""
    port = f"{urlsplit(url).port:04X}"
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := str(fd.readlink())).startswith("socket:["):
                sockets.add(target[8:-1])
    rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[2].endswith(f":{port}") and row.split()[9] in sockets for row in rows)


def gone(pid: int) -> bool:
    """Whether process `pid` has ended: no longer in /proc, or a zombie nobody reaped yet (an orphan
    whose new parent, in a container, may never reap it)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(condition: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


#: The line every run prints once it has claimed its attempt.
STARTED = re.compile(r"rekbatch: run \S+: attempt \d+ started")


def one_line(stderr: str) -> str:
    """The only line on stderr besides the run's `started` line (no traceback, no log line around the
    reason)."""
    lines = [line for line in stderr.strip().splitlines() if not STARTED.fullmatch(line)]
    assert len(lines) == 1, stderr
    return lines[0]
