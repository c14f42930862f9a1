"""Incremental runs: which analyses each listed image still needs. Pure: no I/O.

An image needs an analysis unless a committed run settled it for the same key, ETag and settings digest
(`batch.analyses.settings_digest`: the options that change Rekognition's answer), as read from the
`analyses_done` column of committed `images` files; never from a timestamp high-water mark, which misses
objects copied in with old LastModified values and re-analyses nothing when settings change. Settled:
the analysis answered, or the image was `rejected` (it would be refused again) or `skipped` (zero
bytes). A `failed` analysis is not settled: the next run tries it again. See
docs/design/commit-protocol.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence

from batch.core.manifest import image_identity

#: An analysis's settings digest, or the digests of its parts (`batch.analyses.settled_digests`).
Digests = str | tuple[str, ...]

#: Image statuses that settle every analysis asked of the image, whether it was called or not.
SETTLES_ALL = frozenset({"rejected", "skipped"})


def settled_analyses(status: str, succeeded: Sequence[str], requested: Sequence[str]) -> list[str]:
    """The analyses of one image that a later run need not repeat (same ETag, same settings)."""
    if status in SETTLES_ALL:
        return list(requested)
    return [name for name in requested if name in succeeded]


class SettledState(ABC):
    """What committed runs settled for each (key, etag), asked image by image while planning: the
    analyses of a run an image still needs. Subclasses say how `settled` is found (a dict, or a
    merge-join with a key-ordered snapshot: `batch.core.sorted_state`)."""

    def __init__(self) -> None:
        self._shared: dict[frozenset[tuple[str, str]], frozenset[tuple[str, str]]] = {}
        self._needed: dict[
            tuple[frozenset[tuple[str, str]], tuple[tuple[str, Digests], ...]], tuple[str, ...]
        ] = {}

    @abstractmethod
    def settled(self, key: str, etag: str) -> frozenset[tuple[str, str]]:
        """The (analysis, settings digest) pairs committed runs settled for the image."""

    @abstractmethod
    def unsettle(self, key: str, etag: str, analysis: str) -> None:
        """Forget that committed runs settled `analysis` for the image (its result was lost since)."""

    def shared(self, pairs: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
        """One frozenset per distinct combination of settled pairs (few), shared by every image."""
        return self._shared.setdefault(pairs, pairs)

    def needed(self, key: str, etag: str, wanted: Mapping[str, Digests]) -> tuple[str, ...]:
        """The analyses of `wanted` (name -> settings digest, or the digests of its parts:
        `batch.analyses.settled_digests`; in run order) this image still needs, wholly or in part."""
        settled = self.settled(key, etag)
        pairs = tuple(wanted.items())
        memo = (settled, pairs)
        if memo not in self._needed:  # one tuple per combination, shared by every image that has it
            self._needed[memo] = tuple(name for name, digests in pairs if _unsettled(settled, name, digests))
        return self._needed[memo]

    def missing_parts(self, key: str, etag: str, name: str, digests: tuple[str, ...]) -> tuple[int, ...]:
        """The positions in `digests` of the parts of analysis `name` this image still needs."""
        settled = self.settled(key, etag)
        return tuple(i for i, digest in enumerate(digests) if (name, digest) not in settled)


class CommittedState(SettledState):
    """(key, etag) -> the (analysis, settings digest) pairs committed runs settled for it, in a dict.

    Memory: a 16-byte digest per (key, etag) and one shared frozenset per distinct combination of
    settled analyses (few), so it grows with the images, not with their analyses: for the runs
    committed after the newest snapshot (`batch.storage.snapshot`), or all of them without one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._settled: dict[bytes, frozenset[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._settled)

    def add(self, key: str, etag: str, settled: Iterable[tuple[str, str]]) -> None:
        """Record that a committed run settled these (analysis, settings digest) pairs for the image."""
        identity = image_identity(key, etag)
        self._settled[identity] = self.shared(self._settled.get(identity, frozenset()) | frozenset(settled))

    def unsettle(self, key: str, etag: str, analysis: str) -> None:
        identity = image_identity(key, etag)
        kept = frozenset(pair for pair in self._settled.get(identity, ()) if pair[0] != analysis)
        self._settled[identity] = self.shared(kept)

    def settled(self, key: str, etag: str) -> frozenset[tuple[str, str]]:
        return self._settled.get(image_identity(key, etag), frozenset())


def _unsettled(settled: frozenset[tuple[str, str]], name: str, digests: Digests) -> bool:
    if isinstance(digests, str):
        return (name, digests) not in settled
    return any((name, digest) not in settled for digest in digests)


def settled_now(
    digests: Digests, parts: tuple[int, ...] | None, positions: tuple[int, ...] | None = None
) -> tuple[str, ...]:
    """The digests an image settled for one analysis now: its settings digest, or the parts it ran
    (`parts`: their positions among all, None: all), or of those only the ones at `positions`."""
    if isinstance(digests, str):
        return (digests,)
    ran = tuple(digests) if parts is None else tuple(digests[i] for i in parts)
    return ran if positions is None else tuple(ran[i] for i in positions)
