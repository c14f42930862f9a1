"""The settled state as a merge-join: the listing's keys, in order, against a snapshot sorted by key.

A snapshot (`batch.storage.snapshot`) holds one row per (key, etag) that committed runs settled
something for, sorted by (key, etag) in UTF-8 binary order, the order of ListObjectsV2: planning walks
it forward as the listing goes, holding only the rows of the key asked about and one chunk of rows, so
the driver's memory does not grow with the bucket. Runs committed after the snapshot are held in a
`CommittedState` beside it (few, usually none), and unsettling (`unsettle`: lost faces) is kept aside
and applied to the answer. A key asked out of order rewinds the snapshot (`rows_from` again): the
answer stays right, only slower. Pure: the rows come from the function given. See
docs/design/state.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from batch.core.incremental import CommittedState, SettledState

__all__ = ["Row", "SortedState", "decode_settled", "encode_settled"]

#: A snapshot row: key, ETag, and the settled (analysis, settings digest) pairs (`encode_settled`).
Row = tuple[str, str, str]

_PAIR, _SEPARATOR = "=", ";"


def encode_settled(pairs: Iterable[tuple[str, str]]) -> str:
    """The settled pairs as one string, `analysis=digest` joined by `;` in sorted order: a handful of
    distinct values in a whole bucket, which Parquet's dictionary encoding stores once each."""
    texts = sorted({f"{name}{_PAIR}{digest}" for name, digest in pairs})
    if any(_SEPARATOR in text or text.count(_PAIR) != 1 for text in texts):
        raise ValueError(f"an analysis name or digest with {_PAIR!r} or {_SEPARATOR!r}: {texts}")
    return _SEPARATOR.join(texts)


def decode_settled(text: str) -> frozenset[tuple[str, str]]:
    """The pairs `encode_settled` wrote."""
    return frozenset(tuple(part.split(_PAIR, 1)) for part in text.split(_SEPARATOR) if part)  # type: ignore[misc]


class SortedState(SettledState):
    """The snapshot's rows (`rows_from(key)`: chunks of rows in (key, etag) order from the first whose
    key is >= `key`, or earlier), with `recent` (runs committed after it) merged in."""

    def __init__(
        self, rows_from: Callable[[str], Iterable[Sequence[Row]]], recent: CommittedState | None = None
    ) -> None:
        super().__init__()
        self._rows_from = rows_from
        self._recent = recent if recent is not None else CommittedState()
        self._unsettled: dict[tuple[str, str], set[str]] = {}
        self._decoded: dict[str, frozenset[tuple[str, str]]] = {}
        self._chunks: Iterator[Sequence[Row]] | None = None
        self._chunk: Sequence[Row] = ()
        self._at = 0
        self._key: str | None = None
        self._here: dict[str, frozenset[tuple[str, str]]] = {}
        #: How many times a key asked out of order sent the snapshot back (0 for a sorted listing).
        self.rewinds = 0

    def unsettle(self, key: str, etag: str, analysis: str) -> None:
        self._unsettled.setdefault((key, etag), set()).add(analysis)

    def settled(self, key: str, etag: str) -> frozenset[tuple[str, str]]:
        if key != self._key:
            self._seek(key)
        pairs = self._here.get(etag, frozenset())
        if len(self._recent):
            recent = self._recent.settled(key, etag)
            pairs = pairs | recent if recent else pairs
        gone = self._unsettled.get((key, etag)) if self._unsettled else None
        if gone:
            pairs = frozenset(pair for pair in pairs if pair[0] not in gone)
        return self.shared(pairs)

    def _seek(self, key: str) -> None:
        """Move to `key`'s rows: forward from where the walk is, or from `rows_from(key)` if behind."""
        if self._chunks is None or (self._key is not None and key < self._key):
            self.rewinds += self._chunks is not None
            self._chunks, self._chunk, self._at = iter(self._rows_from(key)), (), 0
        here: dict[str, frozenset[tuple[str, str]]] = {}
        while (row := self._peek()) is not None and row[0] <= key:
            if row[0] == key:
                here[row[1]] = self._decode(row[2])
            self._at += 1
        self._key, self._here = key, here

    def _peek(self) -> Row | None:
        while self._at >= len(self._chunk):
            assert self._chunks is not None
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._chunk, self._at = chunk, 0
        return self._chunk[self._at]

    def _decode(self, text: str) -> frozenset[tuple[str, str]]:
        if text not in self._decoded:
            self._decoded[text] = self.shared(decode_settled(text))
        return self._decoded[text]
