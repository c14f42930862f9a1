"""batch.core.manifest.Ledger at scale: unchanged images are counted, not held; images sent are held
while in flight and by an 8-byte fingerprint once their outcome came."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from batch.core.manifest import Fingerprints, ImageOutcome, Ledger


def allocated(build) -> int:
    """Bytes still allocated by what `build()` returns."""
    tracemalloc.start()
    try:
        kept = build()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return size


def unchanged_ledger(n: int) -> Ledger:
    ledger = Ledger()
    for i in range(n):
        ledger.unchanged(f"photos/{i:09d}.jpg", f'"{i:032x}"')
    return ledger


def sent_ledger(n: int) -> Ledger:
    ledger = Ledger()
    for i in range(n):
        ledger.listed(f"photos/{i:09d}.jpg", f'"{i:032x}"')
        ledger.record(ImageOutcome(f"photos/{i:09d}.jpg", f'"{i:032x}"', "analysed", ("labels",)))
    return ledger


def test_a_ledger_of_many_unchanged_or_finished_images_stays_small() -> None:
    assert allocated(lambda: unchanged_ledger(20_000)) < 20_000
    # 8 bytes per finished image, and at most MERGE_MAX of the latest in a set (1M: the test's 20k
    # images may all be there): under 80 bytes each instead of ~250 (three sets of 16-byte digests).
    assert allocated(lambda: sent_ledger(20_000)) < 80 * 20_000
    ledger = sent_ledger(1000)
    assert ledger.problems() == []
    assert (ledger.counts["listed"], ledger.counts["analysed"]) == (1000, 1000)


def test_a_key_listed_again_is_a_problem_and_unchanged_images_are_counted() -> None:
    ledger = Ledger()
    ledger.unchanged("a.jpg", "e")
    ledger.listed_again()
    assert (ledger.counts["listed"], ledger.counts["unchanged"]) == (2, 1)
    assert ledger.problems() == ["1 images listed twice"]


@given(st.lists(st.integers(0, 2**64 - 1)), st.lists(st.integers(0, 2**64 - 1)), st.integers(1, 8))
def test_fingerprints_hold_what_was_added(added: list[int], others: list[int], merge_at: int) -> None:
    prints = Fingerprints()
    prints.MERGE_AT = merge_at  # merge often: the sorted array and the recent set both answer
    for value in added:
        prints.add(value)
    assert all(value in prints for value in added)
    assert [value in prints for value in others] == [value in set(added) for value in others]
    assert len(prints) == len(set(added))
