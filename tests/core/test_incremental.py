"""batch.core.incremental and the driver's planning: which analyses each listed image still needs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from batch.core.incremental import CommittedState, settled_analyses
from batch.core.manifest import Ledger
from batch.core.selection import ListedObject
from batch.run.job import plan_images

WANTED = {"labels": "L1", "faces": "F1", "text": "T1"}
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def obj(key: str, etag: str = "e1", size: int = 10) -> ListedObject:
    return ListedObject(key, etag, size, NOW)


def test_a_failed_analysis_is_not_settled_a_rejected_or_skipped_image_settles_all() -> None:
    requested = ("labels", "faces", "text")
    assert settled_analyses("analysed", ["labels", "faces", "text"], requested) == list(requested)
    assert settled_analyses("failed", ["labels"], requested) == ["labels"]
    assert settled_analyses("rejected", [], requested) == list(requested)
    assert settled_analyses("skipped", [], requested) == list(requested)


def test_an_image_needs_what_no_committed_run_settled_with_its_etag_and_settings() -> None:
    state = CommittedState()
    state.add("a.jpg", "e1", [("labels", "L1"), ("faces", "F1")])
    state.add("a.jpg", "e1", [("text", "T0")])  # an older run with other text settings
    assert state.needed("a.jpg", "e1", WANTED) == ("text",)
    assert state.needed("a.jpg", "e2", WANTED) == ("labels", "faces", "text")  # changed object
    assert state.needed("b.jpg", "e1", WANTED) == ("labels", "faces", "text")  # new object
    assert state.needed("a.jpg", "e1", {"labels": "L1", "faces": "F1"}) == ()
    assert state.needed("a.jpg", "e1", {"faces": "F2", "labels": "L1"}) == ("faces",)  # new settings
    assert len(state) == 1


@given(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from(["e1", "e2"])), max_size=20),
    st.lists(st.sampled_from(["labels", "faces", "text"]), unique=True),
)
def test_needed_analyses_are_the_wanted_ones_minus_the_settled_ones(
    images: list[tuple[str, str]], settled: list[str]
) -> None:
    state = CommittedState()
    for key, etag in images:
        state.add(key, etag, [(name, WANTED[name]) for name in settled])
    for key, etag in images:
        assert state.needed(key, etag, WANTED) == tuple(n for n in WANTED if n not in settled)


def test_planning_records_unchanged_images_and_sends_the_others_with_their_analyses() -> None:
    state = CommittedState()
    state.add("old.jpg", "e1", list(WANTED.items()))
    state.add("half.jpg", "e1", [("labels", "L1")])
    ledger = Ledger()
    listing = [obj("old.jpg"), obj("half.jpg"), obj("new.jpg"), obj("kept.jpg")]
    planned = list(plan_images(listing, ledger, state, WANTED, skip_keys=frozenset({"kept.jpg"})))
    assert [(p.obj.key, p.analyses) for p in planned] == [
        ("half.jpg", ("faces", "text")),
        ("new.jpg", ("labels", "faces", "text")),
    ]
    assert (ledger.counts["listed"], ledger.counts["unchanged"]) == (3, 1)


def test_the_limit_counts_images_sent_and_stops_reading_the_listing() -> None:
    state = CommittedState()
    state.add("u1.jpg", "e1", list(WANTED.items()))
    read = []

    def listing() -> Iterator[ListedObject]:
        for key in ("n1.jpg", "u1.jpg", "n2.jpg", "n3.jpg", "n4.jpg"):
            read.append(key)
            yield obj(key)

    ledger = Ledger()
    planned = [p.obj.key for p in plan_images(listing(), ledger, state, WANTED, limit=2)]
    assert planned == ["n1.jpg", "n2.jpg"]
    assert read == ["n1.jpg", "u1.jpg", "n2.jpg", "n3.jpg"]  # n3 only looked at, not taken
    assert ledger.counts["listed"] == 3  # n3 is not part of this run: nothing is lost
