"""moto's S3 server on 127.0.0.1, as a subprocess that is always stopped.

A subprocess rather than moto's in-process ThreadedMotoServer: it keeps moto's request handling off the
caller's GIL, which matters when a benchmark in the same process drives both servers.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the usual bind-to-0 trick; the race is acceptable on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers (any HTTP status); raise RuntimeError on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - a loopback URL we built
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MotoS3Server:
    """`with MotoS3Server() as s3: s3.url` -> http://127.0.0.1:<port>; stopped on exit."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoS3Server:
        cmd = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        # moto (werkzeug) logs every request on stderr: discard it.
        self._proc = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until_up(f"{self.url}/moto-api/", proc=self._proc)
        except BaseException:
            self.stop()
            raise
        log.info("moto S3 server on %s (pid %s)", self.url, self._proc.pid)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def run_until_exit(self) -> int:
        """Block until the server process exits (used by the CLI)."""
        assert self._proc is not None
        return self._proc.wait()

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
