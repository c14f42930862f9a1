"""batch.run.others: a run's start reads the other runs of its output (a local folder, as S3 is read the
same way through `Destination`) and names those whose images it analyses again."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import commit_rows

from batch.core.manifest import (
    AttemptRecord,
    BatchRecord,
    ImageOutcome,
    batch_record_path,
    heartbeat_path,
)
from batch.run.others import warn_of_other_runs
from batch.run.summary import RunSummary
from batch.storage.commits import Heartbeat, RunStore
from batch.storage.sink import Destination
from local_stack.stack import LocalStack

INPUT = "s3://bucket/in/"
NOW = datetime.now(UTC)


def attempt(store: RunStore, run_id: str, input: str = INPUT) -> None:
    store.claim_attempt(AttemptRecord(run_id, 1, NOW, "2026-12-07", input, "digest"))


def summary(command_line: str, digest: str = "digest") -> RunSummary:
    return RunSummary("this", INPUT, "out", ("labels",), digest, command_line, NOW)


def age(root: Path, run_id: str, hours: float) -> None:
    when = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
    for path in (root / "_runs" / run_id).iterdir():
        os.utime(path, (when, when))


def test_the_start_names_a_live_run_and_a_stopped_one_with_work_and_no_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(Destination(str(tmp_path)))
    attempt(store, "stopped")  # killed after a batch: its record stays
    with Heartbeat(store, "stopped", 1):
        pass
    store.write_batch("stopped", BatchRecord(1, 0, (), (ImageOutcome("in/a.jpg", "e", "analysed"),)))
    age(tmp_path, "stopped", 3)
    attempt(store, "idle")  # stopped before its first batch
    with Heartbeat(store, "idle", 1):
        pass
    age(tmp_path, "idle", 3)
    attempt(store, "elsewhere", "s3://bucket/other/")
    with Heartbeat(store, "elsewhere", 1):
        pass
    attempt(store, "done")
    commit_rows(store, "done", {"runs": [{"run_id": "done"}]})
    attempt(store, "this")  # the run starting (a resume of it, say)
    attempt(store, "live")
    with Heartbeat(store, "live", 1, uncommitted=lambda: 12):
        lines = warn_of_other_runs(store, summary("rekbatch run --config c.toml --run-id this"))
    assert json.loads((tmp_path / heartbeat_path("live", 1)).read_text())["uncommitted"] == 12
    assert [line.split(" ")[3] for line in lines] == ["live", "stopped"]
    assert "(12 images done, not committed)" in lines[0]
    assert lines[1].endswith(
        "finish it before the next run with: rekbatch run --config c.toml --resume stopped"
    )
    assert capsys.readouterr().err.splitlines() == lines
    assert store.committed_run_ids() == {"done"}
    assert (tmp_path / batch_record_path("stopped", 1, 0)).exists()


def test_a_stopped_run_of_another_config_is_told_to_resume_with_its_own(tmp_path: Path) -> None:
    store = RunStore(Destination(str(tmp_path)))
    attempt(store, "stopped")
    store.write_batch("stopped", BatchRecord(1, 0, (), (ImageOutcome("in/a.jpg", "e", "analysed"),)))
    (line,) = warn_of_other_runs(store, summary("rekbatch run --run-id this", digest="other"))
    assert line.endswith("with: rekbatch run --resume stopped (with the input and config it ran with)")


@pytest.mark.integration
def test_the_start_reads_other_runs_of_an_s3_output(local_stack: LocalStack) -> None:
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket="others-out")
    store = RunStore(Destination("s3://others-out/tables"), s3)
    attempt(store, "stopped")  # no heartbeat left, a batch record: stopped with work
    store.write_batch("stopped", BatchRecord(1, 0, (), (ImageOutcome("in/a.jpg", "e", "analysed"),)))
    attempt(store, "done")
    commit_rows(store, "done", {"runs": [{"run_id": "done"}]})
    attempt(store, "live")
    with Heartbeat(store, "live", 1, uncommitted=lambda: 3):
        lines = warn_of_other_runs(store, summary("rekbatch run --run-id this"))
    assert [line.split(" ")[3] for line in lines] == ["live", "stopped"]
    assert "(3 images done, not committed)" in lines[0]
    assert lines[1].endswith("finish it before the next run with: rekbatch run --resume stopped")
    assert (store.run_ids(), store.committed_run_ids()) == (["done", "live", "stopped"], {"done"})
