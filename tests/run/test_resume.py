"""batch.run.resume on a local output, no server: what a resumed attempt keeps of a crashed attempt's batch
and image records, what it folds into batches of its own, and what it bills."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.config.loader import load_config
from batch.config.model import RunConfig
from batch.core.calls import IN_FLIGHT
from batch.core.image_record import ImageRecord
from batch.core.manifest import AttemptRecord
from batch.core.tables import image_row
from batch.run.batch_task import finish_batch
from batch.run.commit import Attempt
from batch.run.plan import run_context
from batch.run.resume import keep_earlier_work
from batch.run.summary import RunSummary
from batch.storage.commits import RunStore
from batch.storage.sink import Destination

RUN_ID = "night-1"
STARTED = datetime(2026, 11, 25, 2, tzinfo=UTC)
OK, LOST = ("DetectLabels", "ok"), ("DetectLabels", IN_FLIGHT)


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    overrides = {
        "run.input": "s3://photos/in/",
        "run.output": str(tmp_path / "out"),
        "run.analyses": ["labels"],
    }
    return load_config(environ={}, overrides={**overrides, "run.resume": RUN_ID})


def attempt(number: int) -> Attempt:
    record = AttemptRecord(RUN_ID, number, STARTED, "2026-11-25", "s3://photos/in/", "digest")
    return Attempt(record, attempts={number})


def summary() -> RunSummary:
    return RunSummary(RUN_ID, "s3://photos/in/", "out", ("labels",), "digest", "", STARTED, resumed=True)


def done(key: str, batch: int) -> ImageRecord:
    """`key` analysed in attempt 1, batch `batch`: one successful call."""
    common = {"run_id": RUN_ID, "bucket": "photos", "key": key, "etag": '"e"'}
    row = image_row(
        common, size_bytes=1, last_modified=STARTED, status="analysed", reason=None, analyses=["labels"]
    )
    row["analyses_done"] = [{"analysis": "labels", "settings_digest": "d"}]
    return ImageRecord(key, '"e"', 1, batch, calls={OK: 1}, rows={"images": [row], "errors": []})


def crashed_attempt(config: RunConfig, store: RunStore) -> None:
    """Attempt 1: batch 0 complete; batch 1 cut short with `c` and `d` done and `e` in flight."""
    images = [done("a", 0), done("b", 0), done("c", 1), done("d", 1)]
    for record in images:
        store.write_image(RUN_ID, record)
    store.write_image(
        RUN_ID, ImageRecord("e", '"e"', 1, 1, calls={LOST: 1}, answers={("DetectLabels", "x"): {}})
    )
    finish_batch(run_context(config, attempt(1).record), 0, images[:2], store.s3_client)


def test_a_resume_keeps_the_done_images_of_a_cut_batch_and_bills_the_one_in_flight(config: RunConfig) -> None:
    store = RunStore(Destination(config.output))
    crashed_attempt(config, store)
    second, bill = attempt(2), summary()
    keep_earlier_work(config, store, bill, second)

    assert (bill.kept_batches, bill.kept_images, second.next_batch) == (1, 4, 1)
    assert second.kept_keys == {"a", "b", "c", "d"}
    assert second.resumable == {"e": ('"e"', 1)}  # its new try takes the answers its record holds
    kept, folded = store.batch(RUN_ID, 1, 0), store.batch(RUN_ID, 2, 0)
    assert kept is not None
    assert folded is not None
    assert [image.key for image in folded.images] == ["c", "d"]
    assert (folded.calls, folded.repeated) == ({OK: 2}, {})
    (images,) = [f for f in folded.files if f.table == "images"]
    assert pq.read_table(Path(config.output) / images.path).column("key").to_pylist() == ["c", "d"]
    assert second.files == [*kept.files, *folded.files]
    # The bill: four calls answered, one in flight when the driver died, which the new try makes again.
    assert (bill.calls, bill.repeated_calls) == ({OK: 4, LOST: 1}, {LOST: 1})
    assert (bill.estimated_cost_usd, bill.repeated_cost_usd) == pytest.approx((0.005, 0.001))
    assert second.ledger.counts == {"listed": 4, "analysed": 4}


def test_a_second_resume_keeps_the_first_ones_folded_batch_and_bills_each_call_once(
    config: RunConfig,
) -> None:
    store = RunStore(Destination(config.output))
    crashed_attempt(config, store)
    keep_earlier_work(config, store, summary(), attempt(2))  # then attempt 2 crashed too

    third, bill = attempt(3), summary()
    keep_earlier_work(config, store, bill, third)
    assert (bill.kept_batches, bill.kept_images, third.next_batch) == (2, 4, 0)  # nothing folded again
    assert (bill.calls, bill.repeated_calls) == ({OK: 4, LOST: 1}, {LOST: 1})
    assert third.ledger.problems() == []


def test_a_resume_bills_and_counts_what_its_segments_committed_and_commits_only_the_rest(
    config: RunConfig,
) -> None:
    from batch.core.errors import ConfigError
    from batch.run.commit import commit, start_attempt

    store = RunStore(Destination(config.output))
    crashed_attempt(config, store)
    first, batch0 = attempt(1), store.batch(RUN_ID, 1, 0)
    assert batch0 is not None
    for image in batch0.images:
        first.ledger.listed(image.key, image.etag)
    first.add(batch0)
    commit(config, store, summary(), first, final=False)  # then the driver died
    (segment,) = store.run_manifests(RUN_ID)
    assert (segment.segment, segment.final, segment.batches) == (1, False, ((1, 0),))
    # Another attempt on the run id that is not a resume would commit the segment's images again.
    # Its attempt records gone too (deleted by hand): a new attempt 1 would write over the segment's files.
    with pytest.raises(ConfigError, match="has committed segments"):
        start_attempt(dataclasses.replace(config, resume=""), store, summary())
    with pytest.raises(ConfigError, match="1 segments committed, its control files gone"):
        start_attempt(config, store, summary())
    store.claim_attempt(first.record)
    with pytest.raises(ConfigError, match="has committed segments"):
        start_attempt(dataclasses.replace(config, resume=""), store, summary())

    second, bill = attempt(2), summary()
    keep_earlier_work(config, store, bill, second)
    assert (second.segments, bill.segments, bill.kept_batches) == (1, 1, 1)
    assert second.batches == [(2, 0)]  # the folded c and d only
    assert not {f.path for f in second.files} & {f.path for f in batch0.files}
    assert (bill.calls, second.ledger.counts) == ({OK: 4, LOST: 1}, {"listed": 4, "analysed": 4})
    commit(config, store, bill, second)
    assert (bill.status, bill.segments) == ("completed", 2)
    final = store.manifest(RUN_ID)
    assert final is not None
    assert (final.segment, final.counts["analysed"], final.batches) == (2, 2, ((2, 0),))


def test_a_resume_needs_the_same_config_but_not_the_same_resolved_references(
    config: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config alone (`options_digest`) must match the first attempt's, and is checked before the
    driver hooks; what they resolve (users, reference photos) may have changed: the resume goes on."""
    from batch.core.errors import ConfigError
    from batch.run.commit import check_resume, start_attempt

    store = RunStore(Destination(config.output))
    with pytest.raises(ConfigError, match="no attempt of run night-1"):
        check_resume(config, store, "options")
    store.claim_attempt(dataclasses.replace(attempt(1).record, options_digest="options"))
    assert [a.attempt for a in check_resume(config, store, "options")] == [1]
    with pytest.raises(ConfigError, match="with config options; this is s3://photos/in/ with config other"):
        check_resume(config, store, "other")
    resolved = dataclasses.replace(summary(), config_digest="users changed")
    second = start_attempt(config, store, resolved, "options")
    assert (second.record.attempt, second.record.options_digest) == (2, "options")
    assert "the reference photos (under --users, --reference) changed" in capsys.readouterr().err
    assert AttemptRecord.from_json(second.record.to_json()) == second.record


def test_a_resume_of_an_attempt_recorded_without_its_options_needs_the_same_resolved_config(
    config: RunConfig,
) -> None:
    from batch.core.errors import ConfigError
    from batch.run.commit import start_attempt

    store = RunStore(Destination(config.output))
    store.claim_attempt(attempt(1).record)  # no options digest: written before it existed
    assert start_attempt(config, store, summary(), "options").record.attempt == 2
    with pytest.raises(ConfigError, match="reference photos or users it resolves"):
        start_attempt(config, store, dataclasses.replace(summary(), config_digest="changed"), "options")
