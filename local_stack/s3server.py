"""moto's S3 server on 127.0.0.1, as a subprocess that is always stopped.

A subprocess rather than moto's in-process ThreadedMotoServer: it keeps moto's request handling off the
caller's GIL, which matters when a benchmark in the same process drives both servers. The subprocess is
`python -m local_stack.s3server HOST PORT` (`serve_moto` below): the application `python -m moto.server`
serves (same routing, same backends, same `/moto-api/`) without three of its per-request costs: the
backend lookup (a directory listing and hundreds of URL regexes under a global lock) is memoized by host,
request lines are not logged (errors still are), and connections are kept alive with TCP_NODELAY
(`_KeepAliveHandler`; chunked or very large uploads take werkzeug's close-after path). See
docs/design/rate-limiter.md, "The bench's local stack", for what that saves.
"""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType
from typing import Any

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
        cmd = [sys.executable, "-m", "local_stack.s3server", self.host, str(self.port)]
        # Errors would go to stderr; the tests and the CLI have always discarded it.
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


#: Request bodies up to this size are buffered so the connection can be kept alive; larger ones (and chunked
#: ones) take werkzeug's path, which closes the connection after the answer.
_KEEP_ALIVE_MAX_BODY = 64 * 1024 * 1024


def serve_moto(host: str, port: int) -> None:
    """Serve moto's WSGI application (as `python -m moto.server -H host -p port` does) until killed."""
    import os
    import signal
    import traceback

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.exceptions import InternalServerError
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server does: moto builds some URLs from it

    class Dispatcher(DomainDispatcherApplication):
        """moto.server's dispatcher with the host -> backend lookup memoized (see the module docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._backends: dict[str | None, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            # Called under the dispatcher's lock. The few hosts seen are service/region names: bounded.
            if host not in self._backends:
                self._backends[host] = super().get_backend_for_host(host)
            return self._backends[host]

    class _KeepAliveHandler(MotoRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no delayed-ACK stall

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # werkzeug formats and logs every request line; errors still go through log_error

        def run_wsgi(self) -> None:
            length = self.headers.get("Content-Length")
            if (
                "Transfer-Encoding" in self.headers
                or not (length or "0").isdigit()
                or int(length or 0) > _KEEP_ALIVE_MAX_BODY
            ):
                super().run_wsgi()  # werkzeug's own path: streams the body, then closes the connection
                return
            if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            environ = self.make_environ()
            # Read exactly the declared body, so the next request on this connection starts clean.
            environ["wsgi.input"] = io.BytesIO(self.rfile.read(int(length or 0)))
            answer: list[Any] = []
            chunks: list[bytes] = []

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                answer[:] = [status, headers]  # nothing is sent before the app returns: always replaceable
                return chunks.append

            try:
                result = self.server.app(environ, start_response)
                try:
                    chunks.extend(result)
                finally:
                    if hasattr(result, "close"):
                        result.close()
            except Exception:  # as werkzeug does: log it, answer 500 (and close, to be safe)
                self.server.log("error", f"Error on request:\n{traceback.format_exc()}")
                chunks.clear()
                chunks.extend(InternalServerError()(environ, start_response))
                self.close_connection = True
            status, headers = answer
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            names = set()
            for name, value in headers:
                self.send_header(name, value)  # a "Connection: close" from the app closes, as it should
                names.add(name.lower())
            body = b"".join(chunks)
            no_body = self.command == "HEAD" or int(code) in (204, 304) or int(code) < 200
            if "content-length" not in names and not no_body:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and not no_body:
                self.wfile.write(body)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # werkzeug's `_log` sets up an INFO handler on first use; WARNING keeps startup and request noise out.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = Dispatcher(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  # as moto.server sets it
    server = make_server(host, port, app, threaded=True, request_handler=_KeepAliveHandler)
    # A ThreadedWSGIServer (threaded=True); keep-alive handler threads must not hold up the exit.
    server.daemon_threads = True  # type: ignore[attr-defined]
    server.serve_forever()


if __name__ == "__main__":
    serve_moto(sys.argv[1], int(sys.argv[2]))
