"""Segments: a long run commits what it has done so far every `run.commit_every` (a duration or a count
of images), so readers see a multi-day backfill as it goes. Pure: no I/O.

A segment is an ordinary manifest (`batch.core.manifest.Manifest`, `segment` numbered from 1) listing
only the batches finished since the run's previous one; the run's last manifest (`final`) is the last
segment, and the only one with the `runs` row. A segment's `counts` are the outcomes of its batches
(its `listed`: their sum); the final manifest's are the run's accounting less the segments' before it,
so the counts of a run's manifests add up to the run's, each image once. See
docs/design/commit-protocol.md, "Segments".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from batch.core.manifest import OUTCOMES, BatchRecord

__all__ = ["CommitEvery", "batch_counts", "final_counts", "parse_commit_every"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FORM = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d|images?)")


@dataclass(frozen=True)
class CommitEvery:
    """When a run commits a segment: after `seconds` since its start or its last segment, or once
    `images` images have an outcome in batches not yet committed (0: never by that measure)."""

    seconds: float = 0.0
    images: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.seconds or self.images)

    def due(self, elapsed_seconds: float, images: int) -> bool:
        """A segment is due with `images` images done since the last one, `elapsed_seconds` after it."""
        if images == 0:
            return False
        by_time = bool(self.seconds) and elapsed_seconds >= self.seconds
        return by_time or (bool(self.images) and images >= self.images)


def parse_commit_every(text: str) -> CommitEvery:
    """`"6h"`, `"30m"`, `"90s"`, `"2d"`, `"1.5h"` (a duration), `"100000images"` (a count), or `""` /
    `"0"` (never: one commit at the end). ValueError naming the expected forms otherwise."""
    text = text.strip().lower()
    if text in ("", "0"):
        return CommitEvery()
    match = _FORM.fullmatch(text)
    if match is None:
        forms = "a duration (30m, 6h, 1d) or a count of images (100000images)"
        raise ValueError(f"expected {forms}, got {text!r}")
    number, unit = match.group("number"), match.group("unit")
    if unit.startswith("image"):
        if "." in number or int(number) < 1:
            raise ValueError(f"a count of images must be a whole number >= 1, got {text!r}")
        return CommitEvery(images=int(number))
    seconds = float(number) * _UNITS[unit]
    if seconds < 1:
        raise ValueError(f"a duration must be at least 1s, got {text!r}")
    return CommitEvery(seconds=seconds)


def batch_counts(records: Iterable[BatchRecord]) -> Counter[str]:
    """A segment's `counts`: the outcomes of its batches' images, and `listed`, their sum."""
    counts: Counter[str] = Counter(image.status for record in records for image in record.images)
    counts["listed"] = sum(counts.values())
    return counts


def final_counts(run: Mapping[str, int], segments: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """The final manifest's `counts`: the run's accounting (its ledger) less the segments committed
    before it; and what does not add up (a segment counted an outcome the run does not have), empty
    when the run's manifests together count each of its images once."""
    names = ("listed", *OUTCOMES)
    counts = {name: run.get(name, 0) - segments.get(name, 0) for name in names}
    problems = [
        f"segments count {segments.get(name, 0)} {name}, the run {run.get(name, 0)}"
        for name in names
        if counts[name] < 0
    ]
    return counts, problems
