"""An output that refuses writes ends the run with exit 3 and one line, commits nothing, still writes the
summary JSON, and `--resume` finishes the run once the output takes writes again.

The CLI runs as a subprocess on the local stack. Local failures are real file systems, made as root: a
small tmpfs filled but for a few pages (ENOSPC), a read-only bind mount (EROFS), an immutable folder
(EPERM); each such test is skipped with its reason when not root or when the mount is refused. The S3
failure is the output bucket deleted while the run writes to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image, wait_for
from processes import one_line

from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.sink import Destination
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "output-failures"
#: Room left on the small tmpfs: the attempt record and the heartbeat (a page each), and about two batches
#: of 4 images (an image record of a page per image, an `images` file of two pages and a batch record of
#: one), then an image's record or a batch's file finds the disk full. 16 images need 4 batches.
FREE_BYTES = 80 * 1024
TMPFS_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(extra_args=["--latency-ms", "30"]) as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        yield local


def upload(stack: LocalStack, prefix: str, count: int) -> list[str]:
    keys = [f"{prefix}{n:02d}.jpg" for n in range(count)]
    s3 = stack.s3_client()
    for n, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=make_image(size=(160 + n % 7, 120)))
    return keys


def rekbatch(
    stack: LocalStack, tmp: Path, prefix: str, output: str, *args: str, summary: Path | None = None
) -> subprocess.Popen[str]:
    """`rekbatch run` over s3://BUCKET/<prefix> into `output`, one worker, labels only, no report."""
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", output, "--analyses", "labels",
               "--summary-json", str(summary or tmp / "summary.json"), *args]  # fmt: skip
    env = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1", "REKBATCH_REPORT__ENABLED": "false"}
    return subprocess.Popen(
        command, env=env, cwd=tmp, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def called(stack: LocalStack, since: int) -> Counter[str]:
    return Counter(call["name"] for call in stack.calls()[since:])


def committed_keys(output: str, s3: Any = None) -> Counter[str]:
    with views.connect(output, s3) as sql:
        return Counter(key for (key,) in sql.sql("SELECT key FROM images").fetchall())


# --- local file systems, as root --------------------------------------------------------------------------


def sh(*command: str) -> None:
    """Run a mount or chattr command; skip the test (with its reason) when the system refuses it."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"{' '.join(command)} refused: {result.stderr.strip()}")


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a tmpfs and read-only bind mounts, sets the immutable flag")


@contextlib.contextmanager
def mounted(target: Path, *mount_commands: Sequence[str]) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    try:
        for command in mount_commands:
            sh(*command)
        yield target
    finally:
        while subprocess.run(["mountpoint", "-q", str(target)], check=False).returncode == 0:
            subprocess.run(["umount", str(target)], check=True)


def read_only(folder: Path) -> contextlib.AbstractContextManager[Path]:
    return mounted(
        folder, ["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,ro,bind", str(folder)]
    )


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sh("chattr", "+i", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.usefixtures("as_root")
def test_a_full_disk_stops_the_run_with_exit_3_and_resume_finishes_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = upload(stack, "full/", 16)
    disk = tmp_path / "disk"
    with mounted(disk, ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(disk)]):
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (TMPFS_BYTES - FREE_BYTES))
        output = str(disk / "out")
        before = len(stack.calls())
        code, stderr = finish(rekbatch(stack, tmp_path, "full/", output, "--run-id", "night-1"))
        assert code == 3, stderr
        assert re.fullmatch(
            f"rekbatch: error: run night-1 stopped, nothing committed: cannot write {re.escape(output)}/"
            r"\S+: No space left on device; --resume night-1 finishes it once the output can be written",
            one_line(stderr),
        )
        summary = json.loads((tmp_path / "summary.json").read_text())  # on another disk: written
        assert (summary["status"], summary["exit_code"], summary["committed"]) == ("unwritable", 3, False)
        runs = RunStore(Destination(output))
        assert runs.manifests() == []
        assert "failed" not in {
            status for record in runs.batches("night-1") for _, _, status, _ in record.images
        }
        first = called(stack, before)

        filler.unlink()  # space is back
        before = len(stack.calls())
        code, stderr = finish(rekbatch(stack, tmp_path, "full/", output, "--resume", "night-1"))
        assert code == 0, stderr
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert (summary["status"], summary["images"]) == ("completed", {"listed": 16, "analysed": 16})
        assert committed_keys(output) == Counter(keys)
        kept = {
            image.key for record in runs.batches("night-1") if record.attempt == 1 for image in record.images
        }
        kept |= {record.key for record in runs.images("night-1") if record.attempt == 1 and record.done}
        assert summary["kept_images"] == len(kept) >= 1
        # The resumed attempt called only for the images the first one had not done (in a complete batch
        # or in their records), once each; the first one called none once its records found no room.
        resumed = called(stack, before)
        assert resumed == Counter(set(keys) - kept)
        assert set(first) >= kept
        # The bill is every call the endpoint answered over both attempts: those whose answers the full
        # disk lost (the image's record could not be written once done) are billed in flight, and repeated.
        paid = {c["outcome"]: c["count"] for c in summary["calls"]}
        assert paid.get("ok", 0) + paid.get("in-flight", 0) == first.total() + resumed.total()
        assert sum(c["count"] for c in summary["repeated_calls"]) == first.total() - len(kept)


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize(
    ("refusal", "reason"), [(read_only, "Read-only file system"), (immutable, "Operation not permitted")]
)
def test_an_output_folder_that_refuses_writes_is_exit_3_before_any_call(
    stack: LocalStack, tmp_path: Path, refusal: Any, reason: str
) -> None:
    upload(stack, "refused/", 4)
    out = tmp_path / "out"
    (out / "_commits").mkdir(parents=True)  # an existing output
    before = len(stack.calls())
    with refusal(out):
        code, stderr = finish(rekbatch(stack, tmp_path, "refused/", str(out)))
    assert (code, one_line(stderr)) == (3, f"rekbatch: error: cannot write {out}: {reason}")
    assert stack.calls()[before:] == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"], summary["reason"]) == (
        "unwritable",
        3,
        f"cannot write {out}: {reason}",
    )


@pytest.mark.usefixtures("as_root")
def test_a_read_only_summary_folder_is_exit_2_before_any_call(stack: LocalStack, tmp_path: Path) -> None:
    upload(stack, "summary/", 4)
    folder = tmp_path / "logs"
    before = len(stack.calls())
    with read_only(folder):
        code, stderr = finish(
            rekbatch(stack, tmp_path, "summary/", str(tmp_path / "out"), summary=folder / "s.json")
        )
    assert (code, one_line(stderr)) == (
        2,
        f"rekbatch: error: run.summary_json: cannot write in {folder}: Read-only file system",
    )
    assert stack.calls()[before:] == []
    assert not (tmp_path / "out").exists()


def test_a_missing_summary_folder_is_exit_2_before_any_call(stack: LocalStack, tmp_path: Path) -> None:
    upload(stack, "summary/", 4)
    folder = tmp_path / "no-such-folder"
    before = len(stack.calls())
    code, stderr = finish(
        rekbatch(stack, tmp_path, "summary/", str(tmp_path / "out"), summary=folder / "s.json")
    )
    assert (code, one_line(stderr)) == (
        2,
        f"rekbatch: error: run.summary_json: cannot write in {folder}: No such file or directory",
    )
    assert stack.calls()[before:] == []


# --- S3 ------------------------------------------------------------------------------------------------


def delete_bucket(s3: Any, bucket: str) -> None:
    """Empty the bucket and delete it, again until no write of the run got in between."""
    while True:
        keys = [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        with contextlib.suppress(s3.exceptions.ClientError):
            s3.delete_bucket(Bucket=bucket)
            return


def test_an_output_bucket_deleted_mid_run_is_exit_3_and_commits_nothing(
    stack: LocalStack, tmp_path: Path
) -> None:
    upload(stack, "s3out/", 48)
    s3 = stack.s3_client()
    s3.create_bucket(Bucket="doomed-output")
    job = rekbatch(stack, tmp_path, "s3out/", "s3://doomed-output/tables", "--run-id", "night-2")

    def batch_records() -> int:
        listed = s3.list_objects_v2(Bucket="doomed-output", Prefix="tables/_runs/night-2/batch-")
        return listed.get("KeyCount", 0)

    wait_for(batch_records)  # a batch is complete: the run writes to the bucket
    delete_bucket(s3, "doomed-output")
    code, stderr = finish(job)
    assert code == 3, stderr
    reason = one_line(stderr)
    # A write (a table file, a record) or a task's look-up of its records, whichever came first.
    assert re.match(
        r"rekbatch: error: run night-2 stopped, nothing committed: cannot (write|read) "
        r"s3://doomed-output/tables/",
        reason,
    )
    assert reason.endswith(": NoSuchBucket; --resume night-2 finishes it once the output can be written")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"], summary["committed"]) == ("unwritable", 3, False)
    assert summary["images"].get("analysed", 0) < 48  # it stopped part-way
    s3.create_bucket(Bucket="doomed-output")
    assert RunStore(Destination("s3://doomed-output/tables"), s3).manifests() == []
