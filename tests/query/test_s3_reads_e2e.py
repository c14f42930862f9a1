"""`rekbatch sql` over an s3:// output reads the committed files where they are: only the bytes a query
needs, never a stray file, the same answers as the local folder of the same runs.

The CLI runs as a subprocess on the local stack, its S3 endpoint (`AWS_ENDPOINT_URL_S3`) a TCP relay in
front of moto that counts the bytes S3 answers and notes every request line.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import COMMITTED_AT, commit_rows

from batch.analyses.registry import all_tables
from batch.core.errors import QueryFailed
from batch.core.manifest import Manifest, data_file_name
from batch.query import shell as sql_shell
from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, write_tables
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

BUCKET = "read-output"
REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1\r\n")
QUERY = (
    "SELECT dt, name, count(*) AS n, count(model_version) AS versioned FROM labels GROUP BY ALL ORDER BY ALL"
)


class CountingRelay:
    """A TCP relay to the S3 server at `target`: `answered` counts the bytes S3 sends back, `requests`
    holds each request's method and decoded path."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.answered = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if requests:
                        self.requests += [
                            (m[1].decode(), unquote(m[2].decode())) for m in REQUEST_LINE.finditer(data)
                        ]
                    else:
                        self.answered += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        yield local


def label_rows(run_id: str, count: int, versioned: bool = True) -> list[dict]:
    """Labels with a bulky column (`categories`, random text) that a count by name never needs."""
    rng = random.Random(run_id)
    return [
        {
            "run_id": run_id,
            "key": f"k{n}.jpg",
            "name": f"label-{n % 7}",
            "categories": ["".join(rng.choices("abcdefghij", k=400)) for _ in range(4)],
            **({"model_version": "3.0"} if versioned else {}),
        }
        for n in range(count)
    ]


def commit_history(store: RunStore) -> list[Manifest]:
    """Three runs on two dates, the first written before `labels` had `model_version`."""
    older = all_tables()["labels"]
    older = older.remove(older.get_field_index("model_version"))
    at = [COMMITTED_AT.replace(hour=h) for h in (2, 3, 4)]
    r2 = {"labels": label_rows("r2", 300), "images": [{"run_id": "r2", "key": "a.jpg"}]}
    return [
        commit_rows(store, "r1", {"labels": label_rows("r1", 300, False)}, dt="2026-11-24",
                    schemas={"labels": older}, committed_at=at[0]),
        commit_rows(store, "r2", r2, dt="2026-11-25", committed_at=at[1]),
        commit_rows(store, "r3", {"labels": label_rows("r3", 200)}, dt="2026-11-25", committed_at=at[2]),
    ]  # fmt: skip


def rekbatch_sql(env: dict[str, str], output: str, query: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batch", "sql", "--output", output, "-c", query]
    return subprocess.run(command, env=env, text=True, capture_output=True, timeout=300)


def test_a_query_reads_only_its_columns_of_committed_files_and_answers_as_the_local_folder(
    stack: LocalStack, tmp_path: Path
) -> None:
    s3 = stack.s3_client()
    store = RunStore(Destination(f"s3://{BUCKET}/results"), s3)
    manifests = commit_history(store)
    commit_history(RunStore(Destination(str(tmp_path / "local"))))
    # A crashed attempt's complete file and a stray copy, both under the committed partition.
    stray = write_tables(store.destination, {"labels": label_rows("r9", 300)}, all_tables(), dt="2026-11-25",
                         name=data_file_name("r9", 1, 0), compression="none", s3_client=s3)  # fmt: skip
    body = s3.get_object(Bucket=BUCKET, Key=f"results/{stray[0].path}")["Body"].read()
    s3.put_object(Bucket=BUCKET, Key="results/labels/dt=2026-11-25/_x.parquet", Body=body)
    committed = sum(f.size_bytes for m in manifests for f in m.files_of("labels"))

    relay = CountingRelay(stack.s3_url)
    try:
        env = {**os.environ, **stack.env, "AWS_ENDPOINT_URL_S3": relay.url}
        remote = rekbatch_sql(env, f"s3://{BUCKET}/results", QUERY)
    finally:
        relay.close()
    local = rekbatch_sql({**os.environ, **stack.env}, str(tmp_path / "local"), QUERY)

    assert (remote.returncode, remote.stderr) == (0, ""), remote.stderr
    assert remote.stdout == local.stdout
    assert "│ 2026-11-24 │ label-0 │    43 │         0 │" in remote.stdout  # the older files: null
    read = {path for method, path in relay.requests if method == "GET"}
    assert not {p for p in read if p.endswith(("_x.parquet", f"{data_file_name('r9', 1, 0)}.parquet"))}
    # The query's columns are a small part of the files: a whole-file read answers `committed` bytes.
    assert relay.answered < committed / 4, (relay.answered, committed)


def test_a_missing_committed_file_on_s3_is_one_line_naming_the_run(stack: LocalStack) -> None:
    s3 = stack.s3_client()
    store = RunStore(Destination(f"s3://{BUCKET}/gone"), s3)
    (gone,) = commit_history(store)[1].files_of("images")
    s3.delete_object(Bucket=BUCKET, Key=f"gone/{gone.path}")

    result = rekbatch_sql({**os.environ, **stack.env}, f"s3://{BUCKET}/gone", "SELECT count(*) FROM labels")

    assert (result.returncode, result.stdout) == (3, "")
    reason = f"run r2: committed file s3://{BUCKET}/gone/{gone.path} is missing"
    assert result.stderr == f"rekbatch: error: {reason}\n"


def test_a_file_gone_during_a_session_fails_the_query_in_one_line(stack: LocalStack) -> None:
    s3 = stack.s3_client()
    store = RunStore(Destination(f"s3://{BUCKET}/session"), s3)
    (labels,) = commit_history(store)[2].files_of("labels")

    with views.connect(f"s3://{BUCKET}/session", s3) as connection:
        s3.delete_object(Bucket=BUCKET, Key=f"session/{labels.path}")  # a careless gc, mid-session
        with pytest.raises(QueryFailed) as failed:
            sql_shell.run_script(connection, "SELECT count(*) FROM labels", {}, lambda rows: rows.fetchall())
        assert sql_shell.run_script(connection, "SELECT 1", {}, lambda rows: rows.fetchall()) is None

    location = f"s3://{BUCKET}/session/{labels.path}"
    assert str(failed.value).endswith(f"cannot read {location}: NoSuchKey.")
    assert "Traceback" not in str(failed.value)
