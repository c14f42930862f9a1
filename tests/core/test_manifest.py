"""batch.core.manifest: the commit record's JSON, file names, and the accounting checked before a commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.config.model import RUN_ID_PATTERN
from batch.core.manifest import (
    COMMITS_SCHEMA,
    AttemptRecord,
    BatchRecord,
    FileEntry,
    ImageOutcome,
    Ledger,
    Manifest,
    data_file_name,
    error_rate,
    keep_complete_batches,
    run_of_data_file,
    runs_file_name,
)

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
# S3 keys: any Unicode but surrogates, with the characters that break paths and readers.
keys = st.lists(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["../", "=", "%2F", "+", "_", ".", " "]),
    min_size=1,
    max_size=20,
).map("".join)
etags = st.text("0123456789abcdef-", min_size=1, max_size=34)
run_ids = st.from_regex(RUN_ID_PATTERN, fullmatch=True)
files = st.builds(
    FileEntry,
    table=st.sampled_from(["images", "labels", "errors", "runs"]),
    path=keys,
    rows=st.integers(0, 10**6),
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    size_bytes=st.integers(0, 10**9),
)
outcomes = st.builds(
    ImageOutcome,
    key=keys,
    etag=etags,
    status=st.sampled_from(["analysed", "rejected", "failed", "skipped"]),
    settled=st.lists(st.sampled_from(["labels", "faces", "text"]), unique=True).map(tuple),
)


@given(
    run_id=run_ids,
    attempts=st.lists(st.integers(1, 50), min_size=1, unique=True).map(lambda a: tuple(sorted(a))),
    file_list=st.lists(files, max_size=5).map(tuple),
    digests=st.dictionaries(st.sampled_from(["labels", "faces", "text"]), st.text("0123456789abcdef")),
)
def test_a_manifest_is_one_json_line_that_round_trips(
    run_id: str, attempts: tuple[int, ...], file_list: tuple[FileEntry, ...], digests: dict[str, str]
) -> None:
    manifest = Manifest(
        run_id, attempts[-1], attempts, NOW, NOW, "2026-11-25", "s3://b/p/", "c0ffee", digests, file_list,
        {"listed": 3, "analysed": 2, "unchanged": 1},
    )  # fmt: skip
    line = manifest.to_json()
    assert "\n" not in line
    assert Manifest.from_json(line) == Manifest(
        **{**manifest.__dict__, "counts": {**dict.fromkeys(COMMITS_SCHEMA.field("counts").type.names, 0),
                                          "listed": 3, "analysed": 2, "unchanged": 1}}
    )  # fmt: skip
    # Its members are the columns of the `commits` table (Athena's JSON SerDe maps them by name).
    assert list(json.loads(line)) == COMMITS_SCHEMA.names


@given(
    images=st.lists(outcomes, max_size=6).map(tuple),
    file_list=st.lists(files, max_size=3).map(tuple),
    attempt=st.integers(1, 9),
    batch=st.integers(0, 10**6),
)
def test_batch_records_round_trip(
    images: tuple[ImageOutcome, ...], file_list: tuple[FileEntry, ...], attempt: int, batch: int
) -> None:
    record = BatchRecord(attempt, batch, file_list, images, {("DetectLabels", "ok"): 3}, 1, 2)
    assert BatchRecord.from_json(record.to_json()) == record


def test_attempt_records_round_trip() -> None:
    record = AttemptRecord("r-1", 2, NOW, "2026-11-25", "s3://b/p/", "c0ffee")
    assert AttemptRecord.from_json(record.to_json()) == record


def test_a_manifest_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        Manifest.from_json('{"format": 2}')


@given(run_id=run_ids, attempt=st.integers(1, 10**4), batch=st.integers(0, 10**7))
def test_file_names_say_their_run_and_never_start_with_a_skipped_character(
    run_id: str, attempt: int, batch: int
) -> None:
    for name in (data_file_name(run_id, attempt, batch), runs_file_name(run_id, attempt)):
        path = f"labels/dt=2026-11-25/{name}.parquet"
        assert run_of_data_file(path) == run_id
        assert name[0] not in "_."  # pyarrow and Hive skip such files


def test_names_the_job_does_not_write_have_no_run() -> None:
    for path in ("labels/dt=x/_x.parquet", "labels/dt=x/.tmp-abc", "labels/dt=x/part-0.parquet"):
        assert run_of_data_file(path) is None


# --- accounting ---------------------------------------------------------------------------------------


@st.composite
def listings(draw: st.DrawFn) -> tuple[list[ImageOutcome], list[ImageOutcome]]:
    """Distinct listed images and, for each, one outcome; plus images that were never listed."""
    listed = draw(st.lists(outcomes, max_size=30, unique_by=lambda o: (o.key, o.etag)))
    pairs = {(o.key, o.etag) for o in listed}
    strays = draw(
        st.lists(
            outcomes.filter(lambda o: (o.key, o.etag) not in pairs),
            max_size=3,
            unique_by=lambda o: (o.key, o.etag),
        )
    )
    return listed, strays


def ledger_of(listed: list[ImageOutcome]) -> Ledger:
    ledger = Ledger()
    for outcome in listed:
        ledger.listed(outcome.key, outcome.etag)
    return ledger


@given(listings())
def test_a_clean_run_has_no_problems_and_counts_each_outcome(data: tuple[list, list]) -> None:
    listed, _ = data
    ledger = ledger_of(listed)
    for outcome in listed:
        ledger.record(outcome)
    assert ledger.problems() == []
    assert ledger.counts["listed"] == len(listed)
    for status in ("analysed", "rejected", "failed", "skipped"):
        assert ledger.counts[status] == sum(o.status == status for o in listed)


@given(listings(), st.data())
def test_lost_duplicated_and_unexpected_images_are_each_reported(
    data: tuple[list, list], draw: st.DataObject
) -> None:
    listed, strays = data
    lost = draw.draw(st.sets(st.sampled_from(range(len(listed))))) if listed else set()
    kept = [o for i, o in enumerate(listed) if i not in lost]
    duplicated = draw.draw(st.lists(st.sampled_from(kept), max_size=3)) if kept else []
    ledger = ledger_of(listed)
    for outcome in [*kept, *strays]:
        ledger.record(outcome)
    for outcome in duplicated:
        ledger.record(outcome._replace(settled=()))  # a second outcome, settling nothing again
    expected = {
        "lost": len(lost),
        "unexpected": len(strays),
        "duplicated": len(duplicated),
    }
    reported = dict.fromkeys(expected, 0)
    for problem in ledger.problems():
        number, _, text = problem.partition(" ")
        for name in expected:
            if f"({name})" in text:
                reported[name] = int(number)
    assert reported == expected
    assert (ledger.problems() == []) == (not lost and not strays and not duplicated)


def test_an_analysis_settled_twice_for_one_image_is_reported() -> None:
    ledger = ledger_of([ImageOutcome("a.jpg", "e", "analysed")])
    ledger.record(ImageOutcome("a.jpg", "e", "analysed", ("labels", "labels")))
    assert ledger.problems() == ["1 (key, etag, analysis) settled more than once"]


def test_the_same_key_with_another_etag_is_another_image() -> None:
    ledger = ledger_of([ImageOutcome("a.jpg", "e1", "x"), ImageOutcome("a.jpg", "e2", "x")])
    ledger.record(ImageOutcome("a.jpg", "e1", "analysed", ("labels",)))
    ledger.record(ImageOutcome("a.jpg", "e2", "unchanged"))
    assert ledger.problems() == []


def test_error_rate_is_over_the_images_sent() -> None:
    assert error_rate({"analysed": 6, "rejected": 1, "failed": 1, "unchanged": 100, "skipped": 5}) == 0.25
    assert error_rate({"unchanged": 3}) == 0.0


def test_a_resumed_run_keeps_one_copy_of_each_image() -> None:
    def record(attempt: int, batch: int, *image_keys: str) -> BatchRecord:
        return BatchRecord(attempt, batch, (), tuple(ImageOutcome(k, "e", "analysed") for k in image_keys))

    # Attempt 1 wrote batch 3's record and then the batch was split (its images retried alone).
    records = [record(1, 4, "c"), record(1, 3, "a", "b"), record(1, 5, "a"), record(2, 0, "d")]
    kept = keep_complete_batches(records)
    assert [(r.attempt, r.batch) for r in kept] == [(1, 3), (1, 4), (2, 0)]


def test_a_resumed_run_drops_a_batch_with_a_missing_file_and_keeps_its_retried_copy() -> None:
    def record(attempt: int, batch: int, *image_keys: str) -> BatchRecord:
        entry = FileEntry("images", f"images/dt=d/r-a{attempt}-{batch:06d}.parquet", len(image_keys), "s", 1)
        images = tuple(ImageOutcome(k, "e", "analysed") for k in image_keys)
        return BatchRecord(attempt, batch, (entry,), images)

    # Batch 3's file was deleted (say by gc); its images' retried copy (batch 5) has its files.
    records = [record(1, 3, "a", "b"), record(1, 4, "c"), record(1, 5, "a")]
    kept = keep_complete_batches(records, {"images/dt=d/r-a1-000003.parquet"})
    assert [(r.attempt, r.batch) for r in kept] == [(1, 4), (1, 5)]


def test_a_resumed_run_keeps_the_batches_its_segments_committed_first() -> None:
    def record(attempt: int, batch: int, *image_keys: str) -> BatchRecord:
        return BatchRecord(attempt, batch, (), tuple(ImageOutcome(k, "e", "analysed") for k in image_keys))

    # Batch 3 was split after its record was written; a segment committed its retried copies (5, 6):
    # readers see those, so they are kept, and batch 3 (the same images) is not.
    records = [record(1, 3, "a", "b"), record(1, 4, "c"), record(1, 5, "a"), record(1, 6, "b")]
    kept = keep_complete_batches(records, committed={(1, 5), (1, 6)})
    assert [(r.attempt, r.batch) for r in kept] == [(1, 5), (1, 6), (1, 4)]


def test_segments_have_paths_of_their_own_that_no_run_id_can_take() -> None:
    def manifest(run_id: str, segment: int, final: bool) -> Manifest:
        return Manifest(
            run_id, 1, (1,), NOW, NOW, "2026-11-25", "s3://b/p/", "c0ffee", {}, (), {},
            segment=segment, final=final, batches=((1, 0), (1, 1)),
        )  # fmt: skip

    assert manifest("r-1", 1, True).path == "_commits/r-1.json"
    assert manifest("r-1", 2, False).path == "_commits/r-1@000002.json"
    assert not RUN_ID_PATTERN.match("r-1@000002")
    segment = manifest("r-1", 2, False)
    assert Manifest.from_json(segment.to_json()) == Manifest(
        **{**segment.__dict__, "counts": dict.fromkeys(COMMITS_SCHEMA.field("counts").type.names, 0)}
    )
    # A manifest written before segments existed is its run's one, final commit.
    old = json.loads(manifest("r-1", 1, True).to_json())
    for member in ("segment", "final", "batches"):
        del old[member]
    read = Manifest.from_json(json.dumps(old))
    assert (read.segment, read.final, read.batches) == (1, True, ())


def test_a_segment_does_not_count_the_images_still_to_come_as_lost() -> None:
    ledger = Ledger()
    ledger.listed("a", "e")
    ledger.listed("b", "e")
    ledger.record(ImageOutcome("a", "e", "analysed", ("labels",)))
    assert ledger.problems(final=False) == []
    assert ledger.problems() == ["1 listed images without an outcome (lost)"]
    ledger.record(ImageOutcome("a", "e", "analysed", ("labels",)))
    assert "1 images with more than one outcome (duplicated)" in ledger.problems(final=False)
