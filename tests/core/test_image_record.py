"""batch.core.image_record and the call accounting it rests on: what an image's record says, and what a
resume makes of a crashed attempt's records."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from batch.core.calls import IN_FLIGHT, ImageCalls, paid_calls, request_digest
from batch.core.image_record import ImageRecord, batch_record, sort_leftovers
from batch.core.manifest import BatchRecord, ImageOutcome, image_record_path, run_of_control_file

MODIFIED = datetime(2026, 11, 25, 2, 0, 0, 123000, tzinfo=UTC)

# What rows and answers hold: JSON's values, and datetimes and bytes.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=20)
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))
)
# Member names come from table schemas and AWS's models: none starts with `$`, as the record's tags do.
names = st.text(min_size=1).filter(lambda name: not name.startswith("$"))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
rows = st.lists(st.dictionaries(names, values, max_size=4), max_size=3)


def images_row(key: str, status: str = "analysed", done: tuple[str, ...] = ("labels",)) -> dict[str, object]:
    return {
        "run_id": "r1",
        "key": key,
        "etag": '"e"',
        "last_modified": MODIFIED,
        "status": status,
        "analyses_done": [{"analysis": a, "settings_digest": "d"} for a in done],
    }


def done(key: str, attempt: int = 1, batch: int = 0, **fields: object) -> ImageRecord:
    return ImageRecord(key, '"e"', attempt, batch, rows={"images": [images_row(key)], "errors": []}, **fields)


@given(key=st.text(), tables=st.dictionaries(names, rows, max_size=3), answer=values)
def test_a_record_reads_back_as_written(
    key: str, tables: dict[str, list[dict[str, object]]], answer: object
) -> None:
    record = ImageRecord(
        key,
        '"e"',
        2,
        7,
        calls={("DetectLabels", "ok"): 2, ("DetectText", IN_FLIGHT): 1},
        retries=1,
        repeated={("DetectLabels", "ok"): 1},
        answers={("DetectLabels", "0" * 32): {"Labels": [answer]}},
        rows={"images": [images_row(key)], **tables},
        fatal="DetectText: AccessDeniedException: no",
    )
    assert ImageRecord.from_bytes(record.to_bytes()) == record


def test_a_record_is_done_once_it_has_its_images_row() -> None:
    assert not ImageRecord("k", '"e"', 1, 0, calls={("DetectLabels", IN_FLIGHT): 1}).done
    record = done("k")
    assert record.done
    assert record.outcome == ImageOutcome("k", '"e"', "analysed", ("labels=d",))


def test_what_a_new_try_makes_again_is_what_was_in_flight_and_what_it_cannot_reuse() -> None:
    record = ImageRecord(
        "k",
        '"e"',
        1,
        0,
        calls={
            ("DetectLabels", "ok"): 1,
            ("IndexFaces", "ok"): 1,
            ("DetectText", "ThrottlingException"): 2,  # not paid, not made again
            ("DetectText", IN_FLIGHT): 1,
        },
    )
    assert record.thrown_away() == {("DetectText", IN_FLIGHT): 1}
    assert record.thrown_away({"DetectLabels", "DetectText"}) == {
        ("DetectText", IN_FLIGHT): 1,
        ("IndexFaces", "ok"): 1,
    }
    assert record.thrown_away(()) == {
        ("DetectText", IN_FLIGHT): 1,
        ("IndexFaces", "ok"): 1,
        ("DetectLabels", "ok"): 1,
    }


def test_a_batch_of_records_bills_their_calls_and_their_repeats() -> None:
    first = done(
        "a",
        calls={("DetectLabels", "ok"): 1, ("DetectLabels", IN_FLIGHT): 1},  # a try died, then this one
        retries=1,
        repeated={("DetectLabels", IN_FLIGHT): 1},
    )
    second = done(
        "b", calls={("DetectLabels", "ok"): 1, ("DetectLabels", "ThrottlingException"): 3}, retries=3
    )
    record = batch_record(2, 5, (), [first, second])
    assert record == BatchRecord(
        2,
        5,
        (),
        (first.outcome, second.outcome),
        {
            ("DetectLabels", "ok"): 2,
            ("DetectLabels", IN_FLIGHT): 1,
            ("DetectLabels", "ThrottlingException"): 3,
        },
        retries=4,
        throttled=3,
        repeated={("DetectLabels", IN_FLIGHT): 1},
    )
    assert BatchRecord.from_json(record.to_json()) == record
    assert paid_calls(record.calls, "DetectLabels") == 3


def test_older_batch_records_read_without_repeats() -> None:
    line = (
        '{"attempt":1,"batch":0,"files":[],"images":[],"calls":[["DetectLabels","ok",2]],'
        '"retries":0,"throttled":0}'
    )
    assert BatchRecord.from_json(line).repeated == {}


def test_a_resume_folds_the_first_done_record_of_each_key_by_the_batch_it_was_in() -> None:
    records = [
        done("b", attempt=1, batch=3),
        done("a", attempt=1, batch=3),
        done("c", attempt=1, batch=4),
        done("a", attempt=2, batch=0),  # a second try of "a" done too (two attempts raced): thrown away
        done("k", attempt=1, batch=5),  # an earlier resume folded it into a batch it keeps
        ImageRecord("d", '"e"', 1, 4, calls={("DetectLabels", IN_FLIGHT): 1}),  # unfinished
        ImageRecord("k", '"e"', 1, 5, calls={("DetectLabels", IN_FLIGHT): 1}),  # unfinished, kept since
    ]
    groups, others = sort_leftovers(records, kept_keys={"k"})
    assert [[(r.key, r.attempt) for r in group] for group in groups] == [[("a", 1), ("b", 1)], [("c", 1)]]
    assert sorted((r.key, r.attempt, r.done) for r in others) == [
        ("a", 2, True),
        ("d", 1, False),
        ("k", 1, False),
    ]


def test_an_image_record_is_named_from_the_image_and_the_attempt_never_its_key() -> None:
    path = image_record_path("night-1", 2, "../../etc/passwd.jpg", '"e"')
    assert re.fullmatch(r"_runs/night-1/image-2-[0-9a-f]{32}\.json\.gz", path)
    assert "passwd" not in path
    assert run_of_control_file(path) == "night-1"  # gc knows whose it is
    assert path != image_record_path("night-1", 2, "../../etc/passwd.jpg", '"f"')
    assert path != image_record_path("night-1", 3, "../../etc/passwd.jpg", '"e"')


def test_one_images_calls_count_the_one_in_flight() -> None:
    calls = ImageCalls()
    calls.sending("DetectLabels", retry=False)
    calls.answered("DetectLabels", "ThrottlingException")
    calls.sending("DetectLabels", retry=True)
    assert calls.counts() == {("DetectLabels", "ThrottlingException"): 1, ("DetectLabels", IN_FLIGHT): 1}
    calls.answered("DetectLabels", "ok")
    assert calls.counts() == Counter({("DetectLabels", "ThrottlingException"): 1, ("DetectLabels", "ok"): 1})
    assert calls.retries == 1


def test_a_request_digest_is_the_request_not_how_it_was_built() -> None:
    image = {"S3Object": {"Bucket": "b", "Name": "k.jpg"}}
    assert request_digest("DetectLabels", {"Image": image, "MaxLabels": 10}) == request_digest(
        "DetectLabels", {"MaxLabels": 10, "Image": dict(reversed(list(image.items())))}
    )
    different = [
        ("DetectText", {"Image": image, "MaxLabels": 10}),
        ("DetectLabels", {"Image": image, "MaxLabels": 11}),
        ("DetectLabels", {"Image": image, "MaxLabels": 10.0}),
        ("DetectLabels", {"Image": {"Bytes": b"k.jpg"}, "MaxLabels": 10}),
        ("DetectLabels", {"Image": {"Bytes": "k.jpg"}, "MaxLabels": 10}),
        ("DetectLabels", {"Image": image, "MaxLabels": [10]}),
    ]
    digests = {request_digest("DetectLabels", {"Image": image, "MaxLabels": 10})}
    digests |= {request_digest(op, request) for op, request in different}
    assert len(digests) == 1 + len(different)
