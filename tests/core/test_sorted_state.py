"""batch.core.sorted_state: the merge-join of the listing with a key-ordered snapshot answers as the
whole state in a dict (`CommittedState`) does, whatever the history and the order keys are asked in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hypothesis import given
from hypothesis import strategies as st

from batch.core.incremental import CommittedState
from batch.core.sorted_state import Row, SortedState, decode_settled, encode_settled

#: Keys whose UTF-8 byte order is their code-point order (Python's `<`), as S3 lists them.
KEYS = ["a.jpg", "a/b.jpg", "b.jpg", "Z.jpg", "é.jpg", "日.jpg", "\U0001f600.jpg", "a"]
ETAGS = ["e1", "e2"]
PAIRS = [("labels", "L1"), ("labels", "L0"), ("faces", "F1"), ("face_search", "S1"), ("face_search", "S2")]
WANTED = [
    {"labels": "L1", "faces": "F1"},
    {"labels": "L0", "face_search": ("S1", "S2")},
    {"faces": "F1", "labels": "L1", "face_search": ("S2",)},
]

images = st.tuples(st.sampled_from(KEYS), st.sampled_from(ETAGS), st.sets(st.sampled_from(PAIRS)))
runs = st.lists(st.lists(images, max_size=8), max_size=5)


def snapshot_rows(history: Sequence[Sequence[tuple[str, str, set]]]) -> list[Row]:
    """What `batch.storage.snapshot` writes for these runs: one row per (key, etag), sorted."""
    merged: dict[tuple[str, str], set] = {}
    for run in history:
        for key, etag, pairs in run:
            merged.setdefault((key, etag), set()).update(pairs)
    return [(key, etag, encode_settled(pairs)) for (key, etag), pairs in sorted(merged.items())]


def chunked(rows: list[Row], size: int) -> list[list[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def rows_from(chunks: list[list[Row]]):
    """Like a Parquet file read from the first row group whose last key is >= key."""

    def read(key: str) -> Iterator[list[Row]]:
        first = next((i for i, chunk in enumerate(chunks) if chunk[-1][0] >= key), len(chunks))
        yield from chunks[first:]

    return read


def state_of(history: Sequence[Sequence[tuple[str, str, set]]]) -> CommittedState:
    state = CommittedState()
    for run in history:
        for key, etag, pairs in run:
            state.add(key, etag, pairs)
    return state


@st.composite
def cases(draw: st.DrawFn) -> dict:
    """A history of runs, how many of them the snapshot covers and its chunk size, lost faces, a
    listing (sorted, as S3 lists, or not) and the analyses the run wants."""
    lost = st.tuples(st.sampled_from(KEYS), st.sampled_from(ETAGS), st.sampled_from(PAIRS))
    return {
        "history": draw(runs),
        "split": draw(st.integers(0, 5)),
        "chunk": draw(st.integers(1, 4)),
        "lost": draw(st.lists(lost, max_size=3)),
        "listing": draw(
            st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from([*ETAGS, "e3"])), max_size=12)
        ),
        "in_order": draw(st.booleans()),
        "wanted": draw(st.sampled_from(WANTED)),
    }


@given(cases())
def test_the_merge_join_plans_as_the_whole_state_does(case: dict) -> None:
    """New, changed (another ETag), deleted (in the snapshot, not listed), settings changed (other
    digests wanted) and lost faces (unsettled), with the snapshot covering the first `split` runs and
    the later ones held beside it."""
    history, split, wanted = case["history"], case["split"], case["wanted"]
    chunk, lost, listing, in_order = case["chunk"], case["lost"], case["listing"], case["in_order"]
    whole = state_of(history)
    joined = SortedState(rows_from(chunked(snapshot_rows(history[:split]), chunk)), state_of(history[split:]))
    for key, etag, (name, _) in lost:
        whole.unsettle(key, etag, name)
        joined.unsettle(key, etag, name)
    asked = sorted(set(listing)) if in_order else listing
    for key, etag in asked:
        assert joined.needed(key, etag, wanted) == whole.needed(key, etag, wanted)
        for name, digests in wanted.items():
            if isinstance(digests, tuple):
                assert joined.missing_parts(key, etag, name, digests) == whole.missing_parts(
                    key, etag, name, digests
                )
    if in_order:
        assert joined.rewinds == 0


def test_a_sorted_listing_reads_the_snapshot_once_in_bounded_chunks() -> None:
    rows = [(f"k{i:05d}", "e", encode_settled([("labels", "L1")])) for i in range(10_000)]
    reads: list[str] = []

    def read(key: str) -> Iterator[list[Row]]:
        reads.append(key)
        yield from chunked(rows, 100)

    joined = SortedState(read)
    assert [joined.needed(f"k{i:05d}", "e", {"labels": "L1"}) for i in range(0, 10_000, 7)] == [()] * 1429
    assert reads == ["k00000"]


def test_settled_pairs_round_trip_through_their_encoding() -> None:
    pairs = {("labels", "L1"), ("face_search", "S2")}
    assert encode_settled(pairs) == "face_search=S2;labels=L1"
    assert decode_settled(encode_settled(pairs)) == pairs
    assert decode_settled(encode_settled([])) == frozenset()
