"""What the run report shows, computed from a run's tables one part at a time. Pure: pyarrow in, counts out.

Memory follows the report, not the run: counters of distinct names, fixed-bin histograms, and a
gallery sample of bounded size (`StratifiedSample`), whatever the number of images. Feed every part
of a table to `RunStats.add`; choose the gallery with `GallerySample`; then take the boxes of the
chosen images from their parts with `boxes_of`.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.core.selection import ListedObject
from batch.core.tables import BOX_FIELDS

T = TypeVar("T")

#: Confidence histograms: 20 bins of 5 points, 0-100.
CONFIDENCE_BINS = np.linspace(0.0, 100.0, 21)
#: The confidence column of each table that has one (text: lines only).
CONFIDENCE_COLUMNS: Mapping[str, str] = {
    "labels": "confidence",
    "faces": "confidence",
    "text": "confidence",
    "moderation": "confidence",
    "celebrities": "match_confidence",
}
#: Tables counted by `name` (each row is one image's label, or one recognised face).
NAME_TABLES = ("labels", "moderation", "celebrities")
#: The columns `RunStats.add` reads of each table.
STATS_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "images": (
        "key",
        "etag",
        "size_bytes",
        "last_modified",
        "format",
        "exif_orientation",
        "stored_width",
        "stored_height",
        "width",
        "height",
        "status",
        "status_reason",
        "analyses",
    ),
    "errors": ("error_code", "operation"),
    "labels": ("name", "confidence"),
    "moderation": ("name", "confidence"),
    "celebrities": ("name", "match_confidence"),
    "faces": ("key", "confidence"),
    "text": ("type", "confidence"),
    "call_seconds": ("second", "operation", "outcome", "calls", "quota_tps"),
}


@dataclass(frozen=True)
class ImageEntry:
    """One `images` row, as much of it as the gallery needs, and the part (batch file) it is in."""

    key: str
    etag: str
    part: str
    size_bytes: int
    last_modified: datetime
    format: str | None
    orientation: int
    width: int | None
    height: int | None
    stored_pixels: int | None
    status: str
    reason: str | None

    @property
    def listed(self) -> ListedObject:
        """The object as the run listed it: read it with `batch.aws.s3.read_object`, pinned to its ETag."""
        return ListedObject(self.key, self.etag, self.size_bytes, self.last_modified)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], part: str) -> ImageEntry:
        stored = (row["stored_width"] or 0) * (row["stored_height"] or 0)
        return cls(
            key=row["key"],
            etag=row["etag"] or "",
            part=part,
            size_bytes=row["size_bytes"] or 0,
            last_modified=row["last_modified"],
            format=row["format"],
            orientation=row["exif_orientation"] or 1,
            width=row["width"],
            height=row["height"],
            stored_pixels=stored or None,
            status=row["status"] or "",
            reason=row["status_reason"],
        )


class StratifiedSample(Generic[T]):
    """A reproducible sample spread over strata, in memory bounded by strata x `per_stratum`.

    Each stratum keeps the `per_stratum` items whose keys hash lowest (sha256): the same items
    whatever order they are offered in, and a fair spread within the stratum. `take(n)` deals them
    round-robin, one per stratum in turn, so every stratum is shown before any shows two.
    """

    def __init__(self, per_stratum: int) -> None:
        self._per_stratum = per_stratum
        self._heaps: dict[Hashable, list[tuple[int, str, int, T]]] = {}
        self.offered: Counter[Hashable] = Counter()

    def offer(self, stratum: Hashable, key: str, item: T) -> None:
        self.offered[stratum] += 1
        if self._per_stratum <= 0:
            return
        heap = self._heaps.setdefault(stratum, [])
        # A max-heap on the hash: the root is the item to drop when the stratum is full. The offer's
        # number breaks ties (a key offered twice) before the items, which need not be comparable.
        entry = (-_hash_rank(key), key, -self.offered[stratum], item)
        if len(heap) < self._per_stratum:
            heapq.heappush(heap, entry)
        elif entry[:3] > heap[0][:3]:
            heapq.heapreplace(heap, entry)

    def take(self, count: int) -> list[T]:
        """Up to `count` items: round-robin over the strata (sorted), lowest hash first in each."""
        columns = [
            [entry[-1] for entry in sorted(self._heaps[stratum], key=lambda e: (-e[0], e[1], -e[2]))]
            for stratum in sorted(self._heaps, key=repr)
        ]
        dealt = (column[row] for row in range(self._per_stratum) for column in columns if row < len(column))
        return [item for item, _ in zip(dealt, range(count), strict=False)]

    @property
    def total(self) -> int:
        return sum(self.offered.values())


def _hash_rank(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


class GallerySample:
    """The gallery: analysed images spread over (format, Exif orientation), and images with an error
    spread over their error codes."""

    def __init__(self, thumbnails: int, max_error_tiles: int) -> None:
        self.thumbnails = thumbnails
        self.analysed: StratifiedSample[ImageEntry] = StratifiedSample(thumbnails)
        self.errors: StratifiedSample[ImageEntry] = StratifiedSample(max_error_tiles)
        self._max_error_tiles = max_error_tiles

    def offer(self, entry: ImageEntry) -> None:
        if entry.status == "analysed":
            self.analysed.offer((entry.format or "", entry.orientation), entry.key, entry)
        else:
            self.errors.offer(entry.reason or entry.status, entry.key, entry)

    def chosen(self) -> tuple[list[ImageEntry], list[ImageEntry]]:
        """(analysed images, images with an error), each in the order the gallery shows them."""
        return self.analysed.take(self.thumbnails), self.errors.take(self._max_error_tiles)


@dataclass
class RunStats:
    """The report's counts and distributions, added up part by part."""

    #: Final errors by (error code, operation; "" for an image refused before any call).
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Rows per name: images per label and per moderation label; appearances per celebrity.
    names: dict[str, Counter[str]] = field(default_factory=lambda: {t: Counter() for t in NAME_TABLES})
    #: Images with N faces, for N >= 1; images analysed for faces, to count those with none.
    faces_per_image: Counter[int] = field(default_factory=Counter)
    images_with_faces_analysed: int = 0
    #: Per table: counts in each `CONFIDENCE_BINS` bin.
    confidence: dict[str, np.ndarray] = field(default_factory=dict)
    #: (second, operation, outcome class, calls) rows of `call_seconds`.
    timeline: list[tuple[int, str, str, int]] = field(default_factory=list)
    quotas: dict[str, float] = field(default_factory=dict)

    def add(self, table: str, rows: pa.Table) -> None:
        """Count one part of `table` (read with at least its `STATS_COLUMNS`)."""
        if table == "images":
            analyses = rows["analyses"].to_pylist()
            self.images_with_faces_analysed += sum(1 for names in analyses if names and "faces" in names)
        elif table == "errors":
            operations = (op or "" for op in rows["operation"].to_pylist())
            self.errors.update(zip(rows["error_code"].to_pylist(), operations, strict=True))
        elif table == "faces":
            per_key = pc.value_counts(rows["key"]).field("counts").to_pylist()
            self.faces_per_image.update(per_key)
        elif table == "call_seconds":
            columns = (rows[name].to_pylist() for name in ("second", "operation", "outcome", "calls"))
            self.timeline.extend(zip(*columns, strict=True))
            quotas = zip(rows["operation"].to_pylist(), rows["quota_tps"].to_pylist(), strict=True)
            self.quotas.update((operation, quota) for operation, quota in quotas if quota is not None)
        if table in NAME_TABLES:
            self.names[table].update(name for name in rows["name"].to_pylist() if name is not None)
        if table in CONFIDENCE_COLUMNS:
            lines_only = table == "text"  # words repeat their line's text
            self._add_confidence(table, rows.filter(pc.equal(rows["type"], "LINE")) if lines_only else rows)

    def _add_confidence(self, table: str, rows: pa.Table) -> None:
        values = rows[CONFIDENCE_COLUMNS[table]].drop_null().to_numpy()
        counts, _ = np.histogram(np.clip(values, 0.0, 100.0), bins=CONFIDENCE_BINS)
        self.confidence[table] = self.confidence.get(table, np.zeros(len(CONFIDENCE_BINS) - 1, int)) + counts

    def faces_histogram(self) -> dict[int, int]:
        """Images by number of faces, 0 included (images analysed for faces that have none)."""
        with_faces = sum(self.faces_per_image.values())
        histogram = dict(sorted(self.faces_per_image.items()))
        if self.images_with_faces_analysed:
            histogram = {0: max(0, self.images_with_faces_analysed - with_faces), **histogram}
        return histogram

    def top(self, table: str, count: int = 20) -> list[tuple[str, int]]:
        return self.names[table].most_common(count)


# --- boxes of the gallery's images --------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawnBox:
    """One box to draw over a thumbnail: normalised to the upright image, as the `box_*` columns."""

    table: str
    layer: str
    caption: str
    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class BoxLayer:
    """How one table's boxes are drawn: its legend name, a caption per row, which rows are drawn."""

    table: str
    name: str
    caption: Callable[[Mapping[str, Any]], str]
    keep: Callable[[Mapping[str, Any]], bool] = lambda row: True


def _percent(value: float | None) -> str:
    return "" if value is None else f" {value:.0f}%"


def _face_caption(row: Mapping[str, Any]) -> str:
    age = f" {row['age_low']}-{row['age_high']}" if row.get("age_low") is not None else ""
    return f"face {row['face_index']}{_percent(row['confidence'])}{age}"


#: The tables drawn, in drawing order. Text words are left out (their lines are drawn), and so are
#: `unrecognized_faces`, `indexed_faces`, `unindexed_faces` and `face_matches` when `faces` was asked
#: for: they are the same faces. Any other table with box
#: columns (a future analysis) is drawn too, captioned with its name.
BOX_LAYERS: tuple[BoxLayer, ...] = (
    BoxLayer("label_instances", "label", lambda r: f"{r['name']}{_percent(r['confidence'])}"),
    BoxLayer("text", "text line", lambda r: f"“{r['detected_text']}”", lambda r: r["type"] == "LINE"),
    BoxLayer("faces", "face", _face_caption),
    BoxLayer("celebrities", "celebrity", lambda r: f"{r['name']}{_percent(r['match_confidence'])}"),
    BoxLayer("ppe_persons", "person (PPE)", lambda r: f"person {r['person_id']}{_summary(r['summary'])}"),
    BoxLayer("ppe_equipment", "protective equipment", lambda r: f"{r['equipment_type']} on {r['body_part']}"),
    BoxLayer("custom_labels", "custom label", lambda r: f"{r['name']}{_percent(r['confidence'])}"),
)
_BOX_COLUMNS = {f.name for f in BOX_FIELDS}


def _summary(verdict: str | None) -> str:
    return "" if verdict is None else f" ({verdict.replace('_', ' ')})"


def box_layers(tables: Mapping[str, pa.Schema]) -> list[BoxLayer]:
    """The layers to draw for a run whose tables are `tables` (name -> schema)."""
    known = [layer for layer in BOX_LAYERS if layer.table in tables]
    drawn = {layer.table for layer in BOX_LAYERS}
    if "faces" in tables:  # the same faces again: recognised or not, indexed, searched, compared or not
        drawn.update(
            {
                "unrecognized_faces",
                "indexed_faces",
                "unindexed_faces",
                "face_matches",
                "face_comparisons",
                "user_matches",
            }
        )
    others = [
        BoxLayer(name, name.replace("_", " "), _table_caption(name))
        for name, schema in sorted(tables.items())
        if name not in drawn and set(schema.names) >= _BOX_COLUMNS
    ]
    return known + others


def _table_caption(table: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: table.replace("_", " ")


def boxes_of(layer: BoxLayer, rows: pa.Table, keys: Iterable[str]) -> dict[str, list[DrawnBox]]:
    """The boxes of `layer`'s rows for `keys`, by key; rows without a box are skipped."""
    wanted = rows.filter(pc.is_in(rows["key"], pa.array(list(keys), pa.string())))
    boxes: dict[str, list[DrawnBox]] = {}
    for row in wanted.to_pylist():
        edges = [row["box_left"], row["box_top"], row["box_width"], row["box_height"]]
        if None in edges or not layer.keep(row):
            continue
        boxes.setdefault(row["key"], []).append(DrawnBox(layer.table, layer.name, layer.caption(row), *edges))
    return boxes


def entries(rows: pa.Table, part: str) -> Iterator[ImageEntry]:
    """The gallery entries of one part of `images`."""
    for row in rows.to_pylist():
        yield ImageEntry.from_row(row, part)
