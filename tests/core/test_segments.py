"""`run.commit_every` and the counts of a run's segments (`batch.core.segments`)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.manifest import OUTCOMES, BatchRecord, ImageOutcome
from batch.core.segments import CommitEvery, batch_counts, final_counts, parse_commit_every


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", CommitEvery()),
        ("0", CommitEvery()),
        ("90s", CommitEvery(seconds=90)),
        ("30m", CommitEvery(seconds=1800)),
        ("6h", CommitEvery(seconds=21600)),
        ("1.5h", CommitEvery(seconds=5400)),
        ("1d", CommitEvery(seconds=86400)),
        (" 24H ", CommitEvery(seconds=86400)),
        ("100000images", CommitEvery(images=100_000)),
        ("1image", CommitEvery(images=1)),
        ("250 images", CommitEvery(images=250)),
    ],
)
def test_commit_every_is_a_duration_or_a_count_of_images(text: str, expected: CommitEvery) -> None:
    assert parse_commit_every(text) == expected
    assert parse_commit_every(text).enabled == bool(text.strip() not in ("", "0"))


@pytest.mark.parametrize("text", ["6", "h", "-1h", "6hours", "1.5images", "0images", "0.5s", "1w", "6h30m"])
def test_anything_else_is_refused_with_the_forms_it_takes(text: str) -> None:
    refused = r"expected a duration .* or a count of images|whole number >= 1|at least 1s"
    with pytest.raises(ValueError, match=refused):
        parse_commit_every(text)


def test_a_segment_is_due_after_the_time_or_the_images_and_never_empty() -> None:
    hourly, every_ten = CommitEvery(seconds=3600), CommitEvery(images=10)
    assert not hourly.due(3599, 5)
    assert hourly.due(3600, 5)
    assert not hourly.due(10**6, 0)  # nothing to commit
    assert not every_ten.due(10**6, 9)
    assert every_ten.due(0, 10)
    assert not CommitEvery().due(10**6, 10**6)
    assert CommitEvery(seconds=60, images=10).due(60, 1)
    assert CommitEvery(seconds=60, images=10).due(1, 10)


statuses = st.sampled_from(["analysed", "rejected", "failed", "skipped", "changed"])


@given(
    batches=st.lists(st.lists(statuses, max_size=5), max_size=12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
    unchanged=st.integers(0, 20),
)
def test_the_counts_of_a_runs_manifests_add_up_to_the_runs(
    batches: list[list[str]], cuts: list[int], unchanged: int
) -> None:
    records = [
        BatchRecord(1, n, (), tuple(ImageOutcome(f"{n}/{i}", "e", s) for i, s in enumerate(images)))
        for n, images in enumerate(batches)
    ]
    run: Counter[str] = Counter(s for images in batches for s in images)
    run["unchanged"] = unchanged
    run["listed"] = sum(run.values())
    # Segments at the cuts, each over the batches since the one before; the final gets the rest.
    edges = sorted({min(c, len(records)) for c in cuts})
    segments = [batch_counts(records[a:b]) for a, b in zip([0, *edges], edges, strict=False)]
    for segment in segments:
        assert segment["listed"] == sum(segment[name] for name in OUTCOMES)
    final, problems = final_counts(run, sum(segments, Counter()))
    assert problems == []
    assert all(n >= 0 for n in final.values())
    total = sum((Counter(m) for m in (*segments, final)), Counter())
    assert {name: total[name] for name in ("listed", *OUTCOMES)} == {n: run[n] for n in ("listed", *OUTCOMES)}


def test_segments_that_count_more_than_the_run_do_not_add_up() -> None:
    _, problems = final_counts({"listed": 3, "analysed": 3}, {"listed": 4, "analysed": 4})
    assert problems == ["segments count 4 listed, the run 3", "segments count 4 analysed, the run 3"]
