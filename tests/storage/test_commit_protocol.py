"""The commit protocol end to end: the CLI as a subprocess on the local stack, faults made for real.

What a user would check after each fault: the run's exit code and one-line reason, whether a manifest
exists, and what the documented read path (`batch.storage.readers`) shows: every key exactly once, nothing of
an attempt that did not commit. The endpoint refuses RecognizeCelebrities (`--deny`, as an IAM policy
without `rekognition:RecognizeCelebrities` would) and answers after 30 ms, so batches are in flight
when a process is killed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import make_image
from processes import talks_to, wait_for, worker_processes

from batch.core.manifest import Manifest, image_record_path
from batch.query import views
from batch.run import faults
from batch.storage import readers
from batch.storage.commits import RunStore
from batch.storage.sink import Destination
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "commits"
TEXT = (("text", (20, 20, 120, 24)), ("text", (20, 70, 120, 24)), ("text", (20, 120, 120, 24)))


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--deny", "RecognizeCelebrities", "--latency-ms", "30"]) as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        yield local


def upload(stack: LocalStack, keys: Sequence[str], body: bytes | None = None) -> None:
    s3 = stack.s3_client()
    for n, key in enumerate(keys):
        fmt = "PNG" if key.endswith(".png") else "JPEG"
        data = body if body is not None else make_image(size=(160 + n % 7, 120), rects=TEXT[: n % 4], fmt=fmt)
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def rekbatch(
    stack: LocalStack, tmp: Path, prefix: str, *args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """Start `rekbatch run` over s3://BUCKET/<prefix> into tmp/out, one worker unless `env` says more."""
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", str(tmp / "out"),
               "--summary-json", str(tmp / "summary.json"), *args]  # fmt: skip
    environment = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1", **(env or {})}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, env=environment, cwd=tmp, text=True, **pipes, **popen)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """(exit code, stderr) once the process has ended."""
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def summary(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "summary.json").read_text())


def store(tmp: Path) -> RunStore:
    return RunStore(Destination(str(tmp / "out")))


def committed_keys(tmp: Path) -> Counter[str]:
    """Every key of the committed `images` rows, through DuckDB; pyarrow must read the same."""
    with views.connect(str(tmp / "out")) as sql:
        keys = Counter(row[0] for row in sql.sql("SELECT key FROM images").fetchall())
    runs = store(tmp)
    tables = readers.read_committed(runs, runs.manifests(), "images", ["key"])
    assert Counter(key for table in tables for key in table.column("key").to_pylist()) == keys
    return keys


def called(stack: LocalStack, since: int) -> Counter[tuple[str, str]]:
    """(operation, image key) of every call the endpoint logged since the `since`-th call."""
    return Counter((c["operation"], c["name"]) for c in stack.calls()[since:])


def assert_manifest_matches_its_files(tmp: Path, manifest: Manifest) -> None:
    for entry in manifest.files:
        body = (tmp / "out" / entry.path).read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry.sha256, entry.path
        assert pq.read_metadata(io.BytesIO(body)).num_rows == entry.rows, entry.path


# --- Done when 1: hostile keys ------------------------------------------------------------------------------


def hostile_keys(prefix: str, count: int) -> list[str]:
    """Keys with `../`, spaces, NFC and NFD forms, `=`, `%`, `+`, leading `_` and `.`, 1,024 bytes."""
    shapes = [
        "../escape-{n}.jpg", "../../etc/passwd-{n}.png", "a b/c d {n}.jpg", "x=1/y={n}.jpg",
        "100%/{n}%2F.jpg", "a+b/{n}+c.png", "_hidden/_{n}.jpg", ".dot/.{n}.jpg", "./here/{n}.jpg",
        "dir//double-{n}.jpg",
        unicodedata.normalize("NFC", "café/é-{n}.jpg"), unicodedata.normalize("NFD", "café/é-{n}.jpg"),
        "日本/写真 {n}.png", "emoji-😀/{n}.JPG", "quote's \"q\"; semi,colon-{n}.jpeg",
    ]  # fmt: skip
    keys = [prefix + shapes[n % len(shapes)].format(n=n) for n in range(count - 5)]
    for n in range(5):  # S3's longest keys: 1,024 bytes of UTF-8
        stem = f"{prefix}{n}-" + "é" * 600
        stem = stem.encode()[: 1024 - 4].decode(errors="ignore")
        keys.append(stem + "x" * (1024 - 4 - len(stem.encode())) + ".jpg")
    assert all(len(k.encode()) == 1024 for k in keys[-5:])
    assert len(set(keys)) == count
    return keys


def test_hostile_keys_are_analysed_once_each_and_name_no_file(stack: LocalStack, tmp_path: Path) -> None:
    keys = hostile_keys("hostile/", 200)
    upload(stack, keys, make_image(size=(100, 80)))
    code, stderr = finish(rekbatch(stack, tmp_path, "hostile/", "--analyses", "labels"))
    assert code == 0, stderr
    assert summary(tmp_path)["images"] == {"listed": 200, "analysed": 200}
    assert committed_keys(tmp_path) == Counter(keys)  # exact strings: NFC and NFD stay two keys
    with views.connect(str(tmp_path / "out")) as sql:
        runs = store(tmp_path)
        for table in ("images", "labels", "runs"):
            arrow_rows = sum(t.num_rows for t in readers.read_committed(runs, runs.manifests(), table))
            assert sql.sql(f"SELECT count(*) FROM {table}").fetchall() == [(arrow_rows,)]
    # Nothing outside the output folder but the summary asked for, and no name made from a key.
    written = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    allowed = re.compile(
        r"summary\.json|out/_commits/[\w.-]+\.json|out/_runs/[\w.-]+/(attempt|batch|heartbeat)-[\d-]+\.json"
        r"|out/_runs/[\w.-]+/image-\d+-[0-9a-f]{32}\.json\.gz"  # an image's record: named by a digest
        r"|out/[a-z_]+/dt=\d{4}-\d\d-\d\d/[\w.-]+-a\d+-(\d{6}|runs)\.parquet"
        r"|out/_reports/[\w.-]+\.html"  # the run report: named by run id, never by a key
        r"|out/_state/settled-\d{8}-[\w.-]+\.parquet"  # the state snapshot: named by run id
    )
    assert [path for path in written if not allowed.fullmatch(path)] == []


# --- Done when 2: a worker killed mid-run -------------------------------------------------------------------


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(stack: LocalStack, tmp_path: Path) -> None:
    keys = [f"killed/{n:03d}.jpg" for n in range(48)]
    upload(stack, keys)
    before = len(stack.calls())
    job = rekbatch(
        stack, tmp_path, "killed/", "--analyses", "labels,text", env={"REKBATCH_DASK__N_WORKERS": "2"}
    )
    workers = wait_for(lambda: len(w := worker_processes(job.pid)) == 2 and w)
    wait_for(lambda: len(stack.calls()) - before >= 12)  # an eighth of the calls: batches are in flight
    # One that has made calls: its batch in flight then has calls that its second run repeats.
    victim = wait_for(lambda: next((w for w in workers if talks_to(w, stack.rekognition_url)), None))
    os.kill(victim, signal.SIGKILL)
    code, stderr = finish(job)
    assert code == 0, stderr
    assert not Path(f"/proc/{victim}").exists()
    (manifest,) = store(tmp_path).manifests()
    assert manifest.counts["listed"] == manifest.counts["analysed"] == 48
    assert committed_keys(tmp_path) == Counter(keys)
    with views.connect(str(tmp_path / "out")) as sql:
        repeated = "SELECT key, text_id FROM text GROUP BY ALL HAVING count(*) > 1"
        assert sql.sql(repeated).fetchall() == []
    # The killed worker's batches ran again, but only its calls in flight were made twice (its image
    # threads: 2 Dask threads x 2 images in flight each, one call at a time), and are in the tables once.
    repeats = sum(n - 1 for n in called(stack, before).values())
    assert repeats <= 2 * 2
    repeated = summary(tmp_path)["repeated_calls"]  # billed as in flight, whether Rekognition had them
    assert sum(c["count"] for c in repeated if c["outcome"] in ("ok", "in-flight")) >= repeats


# --- Done when 3: the driver killed between writing and committing, then --resume ---------------------------


def test_a_crash_before_commit_shows_nothing_and_resume_commits_once(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = [f"crash/{n:02d}.jpg" for n in range(16)]
    upload(stack, keys)
    crash = {faults.EXIT_BEFORE_COMMIT: "1"}
    code, _ = finish(
        rekbatch(stack, tmp_path, "crash/", "--analyses", "labels", "--run-id", "night-1", env=crash)
    )
    assert code == faults.EXIT_BEFORE_COMMIT_CODE
    runs = store(tmp_path)
    assert runs.manifests() == []
    assert committed_keys(tmp_path) == Counter()  # all its files are written, none is read
    records = sorted((tmp_path / "out" / "_runs" / "night-1").glob("batch-*.json"))
    assert len(records) == 4  # 16 images, 4 per batch
    # Two batches had not finished: no record (their files stay, unread). In one of them, no image was
    # done either: no image record.
    images = [json.loads(record.read_text())["images"] for record in records[1:3]]
    for record in records[1:3]:
        record.unlink()
    for key, etag, *_ in images[1]:
        (tmp_path / "out" / image_record_path("night-1", 1, key, etag)).unlink()

    before = len(stack.calls())
    code, stderr = finish(rekbatch(stack, tmp_path, "crash/", "--analyses", "labels", "--resume", "night-1"))
    assert code == 0, stderr
    assert set(called(stack, before)) == {("DetectLabels", key) for key, *_ in images[1]}
    assert max(called(stack, before).values()) == 1
    (manifest,) = runs.manifests()
    assert (manifest.run_id, manifest.attempt, manifest.attempts) == ("night-1", 2, (1, 2))
    assert committed_keys(tmp_path) == Counter(keys)
    assert_manifest_matches_its_files(tmp_path, manifest)
    resumed = summary(tmp_path)
    assert (resumed["resumed"], resumed["kept_batches"], resumed["kept_images"]) == (True, 2, 12)

    before = len(stack.calls())
    code, _ = finish(rekbatch(stack, tmp_path, "crash/", "--analyses", "labels", "--resume", "night-1"))
    assert (code, len(stack.calls()) - before) == (0, 0)
    assert summary(tmp_path)["status"] == "already-committed"


# --- Done when 5: poison image, final errors, AccessDenied --------------------------------------------------


def test_a_poison_image_ends_failed_and_every_other_key_commits(stack: LocalStack, tmp_path: Path) -> None:
    keys = [f"poison/{n}.jpg" for n in range(8)]
    upload(stack, keys)
    env = {faults.KILL_WORKER_ON_KEY: "poison/3.jpg", "REKBATCH_DASK__N_WORKERS": "2"}
    code, stderr = finish(
        rekbatch(stack, tmp_path, "poison/", "--analyses", "labels", "--max-error-rate", "0", env=env)
    )
    assert code == 6, stderr
    reason = stderr.strip().splitlines()[-1]
    assert reason.startswith("rekbatch: error: run ")
    assert "12.5% of the images sent were rejected or failed" in reason
    assert committed_keys(tmp_path) == Counter(keys)
    with views.connect(str(tmp_path / "out")) as sql:
        statuses = dict(
            sql.sql("SELECT key, status || ' ' || coalesce(status_reason, '') FROM images").fetchall()
        )
    assert statuses == dict.fromkeys(keys, "analysed ") | {"poison/3.jpg": "failed task failed: KilledWorker"}
    assert summary(tmp_path)["exit_code"] == 6


def test_access_denied_aborts_before_any_commit(stack: LocalStack, tmp_path: Path) -> None:
    keys = [f"denied/{n}.jpg" for n in range(6)]
    upload(stack, keys)
    before = len(stack.calls())
    code, stderr = finish(rekbatch(stack, tmp_path, "denied/", "--analyses", "labels,celebrities"))
    assert code == 4
    reason = stderr.strip().splitlines()[-1]
    assert reason.startswith("rekbatch: error: run ")
    assert "aborted, nothing committed: RecognizeCelebrities: AccessDeniedException" in reason
    assert store(tmp_path).manifests() == []
    assert committed_keys(tmp_path) == Counter()
    calls = called(stack, before)
    # Which image reaches RecognizeCelebrities first is up to thread timing; the first denial stops the rest.
    assert any(operation == "RecognizeCelebrities" for operation, _ in calls)
    assert max(calls.values()) == 1  # a final error is never retried
    assert summary(tmp_path)["committed"] is False


def test_an_empty_prefix_exits_7_before_any_commit(stack: LocalStack, tmp_path: Path) -> None:
    code, stderr = finish(rekbatch(stack, tmp_path, "nothing-here/"))
    assert code == 7
    started, reason = stderr.strip().splitlines()
    assert started.startswith("rekbatch: run ")
    assert started.endswith(": attempt 1 started")
    assert reason == f"rekbatch: error: no images under s3://{BUCKET}/nothing-here/; nothing committed"
    assert store(tmp_path).manifests() == []


# --- Done when 6: two attempts race to commit one run id ----------------------------------------------------


def test_two_attempts_racing_to_commit_one_run_id_have_one_winner(stack: LocalStack, tmp_path: Path) -> None:
    keys = [f"race/{n}.jpg" for n in range(6)]
    upload(stack, keys)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {faults.COMMIT_BARRIER: str(barrier)}
    racers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        args = ("--analyses", "labels", "--run-id", "race-1", "--output", str(tmp_path / "out"))
        racers.append(rekbatch(stack, tmp_path / name, "race/", *args, env=env))
    results = sorted(finish(racer) for racer in racers)
    assert [code for code, _ in results] == [0, 5]
    loser = (
        "rekbatch: error: run race-1: another attempt committed it first; attempt [12]'s files are not read"
    )
    assert re.fullmatch(loser, results[1][1].strip().splitlines()[-1])
    assert len(list(barrier.iterdir())) == 2  # both reached the commit
    (manifest,) = store(tmp_path).manifests()
    assert committed_keys(tmp_path) == Counter(keys)
    # Both wrote every image; only the winner's files are read.
    written = list((tmp_path / "out" / "images").rglob("*.parquet"))
    assert len(written) > len(manifest.files_of("images"))


# --- Done when 7: a write failing part-way ------------------------------------------------------------------

#: Bytes a process of the job may write to one file: less than a batch's `images` or `text` file with
#: 16 long keys (over 20 kB uncompressed), more than one image's (about 12 kB) or the `runs` row (10 kB).
FILE_SIZE_LIMIT = 18_000


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_write_failing_part_way_is_never_committed(stack: LocalStack, tmp_path: Path) -> None:
    keys = [f"partial/{n:02d}-" + "k" * 900 + ".jpg" for n in range(16)]
    upload(stack, keys, make_image(size=(320, 240), rects=TEXT))
    env = {"REKBATCH_OUTPUT__COMPRESSION": "none", "REKBATCH_DASK__BATCH_SIZE": "16"}
    job = rekbatch(
        stack, tmp_path, "partial/", "--analyses", "labels,text", env=env, preexec_fn=limit_file_size
    )
    code, stderr = finish(job)
    assert code == 0, stderr
    assert "failed: [Errno 27] File too large" in stderr  # the batch's task, part-way through a file
    assert summary(tmp_path)["split_batches"] == 1  # so its images were retried one per task
    (manifest,) = store(tmp_path).manifests()
    assert_manifest_matches_its_files(tmp_path, manifest)
    assert committed_keys(tmp_path) == Counter(keys)
    with views.connect(str(tmp_path / "out")) as sql:
        assert sql.sql("SELECT status, count(*) FROM images GROUP BY ALL").fetchall() == [("analysed", 16)]
        assert sql.sql("SELECT count(DISTINCT key) FROM text").fetchall() == [(16,)]
    assert list((tmp_path / "out").rglob(".tmp-*")) == []  # the partial file was removed


# --- Done when 8: incremental runs ----------------------------------------------------------------------


def test_incremental_runs_call_only_for_new_changed_or_resettled_images(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = [f"inc/{n:02d}.jpg" for n in range(10)]
    upload(stack, keys)

    def run(*args: str, env: dict[str, str] | None = None) -> Counter[str]:
        before = len(stack.calls())
        code, stderr = finish(rekbatch(stack, tmp_path, "inc/", "--analyses", "labels,faces", *args, env=env))
        assert code == 0, stderr
        return Counter(operation for operation, _ in called(stack, before).elements())

    assert run() == {"DetectLabels": 10, "DetectFaces": 10}
    assert run() == {}  # nothing changed: no call at all
    assert summary(tmp_path)["images"] == {"listed": 10, "unchanged": 10}
    added = [f"inc/new-{n:02d}.jpg" for n in range(10)]
    upload(stack, added)
    upload(stack, ["inc/03.jpg"], make_image(size=(200, 100)))  # a new ETag
    assert run() == {"DetectLabels": 11, "DetectFaces": 11}
    assert summary(tmp_path)["images"] == {"listed": 20, "analysed": 11, "unchanged": 9}
    with views.connect(str(tmp_path / "out")) as sql:
        settled = "SELECT key, etag, d.analysis FROM images, UNNEST(analyses_done) AS t(d)"
        twice = f"SELECT *, count(*) FROM ({settled}) GROUP BY ALL HAVING count(*) > 1"
        assert sql.sql(twice).fetchall() == []  # no (key, etag, analysis) settled by two runs
        assert sql.sql(f"SELECT count(*) FROM ({settled})").fetchall() == [(2 * (10 + 11),)]
    # New labels settings: labels again for every image, faces for none.
    assert run(env={"REKBATCH_ANALYSES__LABELS__MIN_CONFIDENCE": "70"}) == {"DetectLabels": 20}
    assert run("--full") == {"DetectLabels": 20, "DetectFaces": 20}
    assert len(store(tmp_path).manifests()) == 5
