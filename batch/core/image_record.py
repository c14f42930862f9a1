"""One image's record in a running attempt: what lets a crash cost no more than the calls in flight.

Before each of an image's calls is sent, the attempt writes the image's record (`image_record_path`):
the calls made so far, the one about to be sent counted `in-flight`, and the answers received. Once
the image is done, the record holds its outcome and its rows for every table instead of the answers.
A try of the image that finds a done record (a Dask task re-run after a lost worker, a failed batch
split) takes its rows; one that finds an unfinished record takes its answers, so only the calls that
were in flight are made again (`thrown_away`). `--resume` folds the done records of the batches a crash
cut short into files of its own attempt and gives the unfinished ones' answers to the images' new tries.
Pure: the bytes of a record, not where they go. See docs/design/commit-protocol.md.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batch.core.calls import IN_FLIGHT, throttled_calls
from batch.core.manifest import BatchRecord, FileEntry, ImageOutcome, call_counts, call_list

__all__ = ["ImageRecord", "batch_record", "outcome_of", "sort_leftovers"]

Calls = Mapping[tuple[str, str], int]


def outcome_of(images_row: Mapping[str, Any]) -> ImageOutcome:
    """An image's outcome, from its `images` row: the (analysis, settings digest) pairs it settled, as
    `analysis=digest`, from `analyses_done`. An analysis of several parts (one per reference photo, say)
    settles one pair per part: only the same pair twice is settled twice."""
    settled = tuple(f"{d['analysis']}={d['settings_digest']}" for d in images_row["analyses_done"])
    return ImageOutcome(images_row["key"], images_row["etag"], images_row["status"], settled)


@dataclass(frozen=True)
class ImageRecord:
    """One image in one attempt: its calls and their answers, and once done its rows (`done`)."""

    key: str
    etag: str
    attempt: int
    #: The batch of `attempt` the image was analysed in (a resume folds an unfinished batch's images
    #: into one batch).
    batch: int
    #: Every attempt of the image's calls in `attempt`, by (operation, outcome); one sent whose answer
    #: is not in is `in-flight`.
    calls: Calls = field(default_factory=dict)
    retries: int = 0
    #: Of `calls`: those made again by a later try (or for nothing: a failed task), paid twice.
    repeated: Calls = field(default_factory=dict)
    #: Until done: the answers of its successful calls by (operation, request digest).
    answers: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    #: Once done: its rows by table (`images`, `errors` and the analyses' tables).
    rows: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    #: Once done: why the whole run cannot succeed, when this image found out (AccessDeniedException).
    fatal: str | None = None

    @property
    def done(self) -> bool:
        return bool(self.rows.get("images"))

    @property
    def outcome(self) -> ImageOutcome:
        return outcome_of(self.rows["images"][0])

    def thrown_away(self, reused: Container[str] | None = None) -> Counter[tuple[str, str]]:
        """The paid calls of this unfinished image that a new try makes again (or, failed, never uses):
        every call in flight (its answer is lost), and each answered one of an operation whose answers
        the new try does not take (not in `reused`; None: it takes every operation's)."""
        return Counter(
            {
                (op, outcome): n
                for (op, outcome), n in self.calls.items()
                if outcome == IN_FLIGHT or (outcome == "ok" and reused is not None and op not in reused)
            }
        )

    def to_bytes(self) -> bytes:
        """gzip of one JSON document (`zcat` shows it); timestamps and bytes in rows are tagged."""
        document = {
            "key": self.key,
            "etag": self.etag,
            "attempt": self.attempt,
            "batch": self.batch,
            "calls": call_list(self.calls),
            "retries": self.retries,
            "repeated": call_list(self.repeated),
            "answers": [[op, digest, answer] for (op, digest), answer in self.answers.items()],
            "rows": self.rows,
            "fatal": self.fatal,
        }
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=_tagged)
        return gzip.compress(text.encode(), mtime=0)

    @classmethod
    def from_bytes(cls, body: bytes) -> ImageRecord:
        d = json.loads(gzip.decompress(body), object_hook=_untagged)
        return cls(
            key=d["key"],
            etag=d["etag"],
            attempt=d["attempt"],
            batch=d["batch"],
            calls=call_counts(d["calls"]),
            retries=d["retries"],
            repeated=call_counts(d["repeated"]),
            answers={(op, digest): answer for op, digest, answer in d["answers"]},
            rows=d["rows"],
            fatal=d["fatal"],
        )


def batch_record(
    attempt: int, batch: int, files: Iterable[FileEntry], images: Sequence[ImageRecord]
) -> BatchRecord:
    """The record of a batch made of done image records: their outcomes, and what they cost."""
    calls = sum((Counter(image.calls) for image in images), Counter[tuple[str, str]]())
    repeated = sum((Counter(image.repeated) for image in images), Counter[tuple[str, str]]())
    return BatchRecord(
        attempt,
        batch,
        tuple(files),
        tuple(image.outcome for image in images),
        dict(calls),
        sum(image.retries for image in images),
        throttled_calls(calls.items()),
        dict(repeated),
    )


def sort_leftovers(
    records: Iterable[ImageRecord], kept_keys: Collection[str]
) -> tuple[list[list[ImageRecord]], list[ImageRecord]]:
    """For a resume, the image records of earlier attempts that no kept batch accounts for: the done ones
    to keep, grouped by the batch they were analysed in, in (attempt, batch) order, the first of a key
    only; and the others: unfinished, or a second done record of a key.

    A done record of a key a kept batch holds is neither: an earlier resume folded it into that batch,
    whose record bills its calls."""
    groups: dict[tuple[int, int], list[ImageRecord]] = {}
    wasted: list[ImageRecord] = []
    seen = set(kept_keys)
    for record in sorted(records, key=lambda r: (r.attempt, r.batch, r.key)):
        if record.done and record.key in kept_keys:
            continue
        if record.done and record.key not in seen:
            groups.setdefault((record.attempt, record.batch), []).append(record)
            seen.add(record.key)
        else:
            wasted.append(record)
    return list(groups.values()), wasted


# Rows hold what pyarrow takes for their columns: JSON's types, and datetimes (`last_modified`) and bytes,
# tagged here so that a record's rows build exactly the table the image's own rows build.
_DATETIME, _BYTES = "$datetime", "$bytes"


def _tagged(value: Any) -> dict[str, str]:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode()}
    raise TypeError(f"a row value of type {type(value).__name__} has no place in an image record")


def _untagged(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _DATETIME in obj:
            return datetime.fromisoformat(obj[_DATETIME])
        if _BYTES in obj:
            return base64.b64decode(obj[_BYTES])
    return obj
