"""What the local endpoint "sees": solid palette-coloured rectangles in the upright frame, and image stats.

Convention (docs/local-stack.md):
    red     (255,   0,   0)  a face of an unknown person
    orange  (255, 128,   0)  a face of the celebrity (see `CELEBRITY`)
    green   (  0, 255,   0)  one instance of the label "Box"
    blue    (  0,   0, 255)  one text LINE made of two WORDs (see `LINE_TEXT`, `word_boxes`)
    magenta (255,   0, 255)  content that moderation flags (no box)
    yellow  (255, 255,   0)  a head cover (DetectProtectiveEquipment), worn by the nearest face's person
    cyan    (  0, 255, 255)  a face cover, worn likewise

A pixel belongs to a colour when every channel is within `CHANNEL_TOLERANCE` of it (JPEG noise); an object
is a 4-connected component of such pixels, its box the component's bounding box; components smaller than
`MIN_AREA_FRACTION` of the short side squared are noise. Pure: arrays in, values out; the cache keyed by
content digest lives in `AnalysisCache`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from local_stack.errors import ServiceError

PALETTE: dict[str, tuple[int, int, int]] = {
    "face": (255, 0, 0),
    "celebrity": (255, 128, 0),
    "box": (0, 255, 0),
    "text": (0, 0, 255),
    "moderation": (255, 0, 255),
    "head_cover": (255, 255, 0),
    "face_cover": (0, 255, 255),
}
CHANNEL_TOLERANCE = 60
MIN_AREA_FRACTION = 0.01

#: The two words every blue rectangle reads as, and where they sit in the line box (fractions of its width).
LINE_TEXT = ("LOCAL", "STACK")
WORD_SPANS = ((0.0, 0.45), (0.55, 1.0))

CELEBRITY = {
    "Name": "Ada Lovelace",
    "Id": "1AdaL0v3",
    "Urls": ["www.wikidata.org/wiki/Q7259"],
    "KnownGender": {"Type": "Female"},
}


@dataclass(frozen=True)
class PixelBox:
    """A box in upright pixels; `fill` is the fraction of the box the component covers (1.0 = solid)."""

    left: int
    top: int
    width: int
    height: int
    fill: float = 1.0

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        return rgb[self.top : self.top + self.height, self.left : self.left + self.width]


@dataclass(frozen=True)
class DominantColor:
    red: int
    green: int
    blue: int
    pixel_percent: float


@dataclass(frozen=True)
class RegionStats:
    """Brightness, sharpness, contrast (0..100) and dominant colours of a set of pixels."""

    brightness: float
    sharpness: float
    contrast: float
    colors: tuple[DominantColor, ...] = ()


@dataclass(frozen=True)
class SeenObject:
    kind: str
    box: PixelBox
    stats: RegionStats


@dataclass(frozen=True)
class Analysis:
    """Everything the operations need about one image, in the upright frame."""

    width: int
    height: int
    objects: tuple[SeenObject, ...]
    image: RegionStats
    foreground: RegionStats
    background: RegionStats

    def of_kind(self, *kinds: str) -> list[SeenObject]:
        return [o for o in self.objects if o.kind in kinds]

    @property
    def faces(self) -> list[SeenObject]:
        """Red and orange faces, largest first (ties by position): Rekognition keeps the largest faces."""
        return sorted(self.of_kind("face", "celebrity"), key=lambda o: (-o.box.area, o.box.top, o.box.left))

    @property
    def moderated(self) -> bool:
        return bool(self.of_kind("moderation"))


# ---- connected components -------------------------------------------------------------------------------


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All horizontal runs of True: (row, start, end-exclusive) arrays, in row-major order."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    diff = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(diff == 1)
    _rows_e, ends = np.nonzero(diff == -1)
    return rows_s, starts, ends


def find_components(mask: np.ndarray) -> list[PixelBox]:
    """4-connected components of a boolean mask as boxes with their fill ratio (union-find over row runs)."""
    rows, starts, ends = _row_runs(mask)
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_row: dict[int, list[int]] = {}
    for i, r in enumerate(rows.tolist()):
        by_row.setdefault(r, []).append(i)
    for r, runs in by_row.items():
        above = by_row.get(r - 1, [])
        j = 0
        for i in runs:
            # Runs on both rows are sorted by start: advance past runs that end before this one starts.
            while j < len(above) and ends[above[j]] <= starts[i]:
                j += 1
            k = j
            while k < len(above) and starts[above[k]] < ends[i]:
                parent[root(i)] = root(above[k])
                k += 1
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(root(i), []).append(i)
    boxes = []
    for members in groups.values():
        idx = np.asarray(members)
        top, bottom = int(rows[idx].min()), int(rows[idx].max()) + 1
        left, right = int(starts[idx].min()), int(ends[idx].max())
        count = int((ends[idx] - starts[idx]).sum())
        box_area = (right - left) * (bottom - top)
        boxes.append(PixelBox(left, top, right - left, bottom - top, fill=count / box_area))
    return sorted(boxes, key=lambda b: (b.top, b.left))


def colour_mask(
    rgb: np.ndarray, colour: tuple[int, int, int], tolerance: int = CHANNEL_TOLERANCE
) -> np.ndarray:
    """Pixels whose every channel is within `tolerance` of `colour`'s: per-channel uint8 range checks,
    which cost a tenth of a widened |rgb - colour| over the whole array (the endpoint's hottest loop)."""
    mask = np.ones(rgb.shape[:2], dtype=bool)
    for channel, value in enumerate(colour):
        plane = rgb[..., channel]
        low, high = value - tolerance, value + tolerance
        if low > 0:
            mask &= plane >= low
        if high < 255:
            mask &= plane <= high
    return mask


def find_objects(rgb: np.ndarray) -> list[tuple[str, PixelBox]]:
    """Every palette object in the image, in (kind, box) pairs, noise components dropped."""
    min_area = MIN_AREA_FRACTION * min(rgb.shape[:2]) ** 2
    found = []
    for kind, colour in PALETTE.items():
        mask = colour_mask(rgb, colour)
        if not mask.any():  # most images lack most colours: skip the run-length pass
            continue
        for box in find_components(mask):
            if box.area * box.fill >= min_area:
                found.append((kind, box))
    return found


# ---- statistics -----------------------------------------------------------------------------------------


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def dominant_colors(pixels: np.ndarray, limit: int = 20) -> tuple[DominantColor, ...]:
    """Colours of the most populated cells of an 8x8x8 RGB grid; each is the mean of its cell's pixels."""
    flat = pixels.reshape(-1, 3)
    if len(flat) == 0:
        return ()
    cells = (flat[:, 0] >> 5).astype(np.int32) * 64 + (flat[:, 1] >> 5) * 8 + (flat[:, 2] >> 5)
    counts = np.bincount(cells, minlength=512)
    # Per-cell channel sums in one pass each, rather than one boolean scan of all pixels per cell.
    sums = [np.bincount(cells, weights=flat[:, c], minlength=512) for c in range(3)]
    order = np.argsort(-counts, kind="stable")[:limit]
    colours = []
    for cell in order:
        if counts[cell] == 0:
            break
        red, green, blue = (round(float(channel[cell]) / counts[cell]) for channel in sums)
        colours.append(DominantColor(red, green, blue, round(100.0 * counts[cell] / len(flat), 4)))
    return tuple(colours)


def _luminance_and_gradient(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lum = _luminance(rgb.astype(np.float32))
    grad = np.zeros_like(lum)
    if lum.shape[0] > 1 and lum.shape[1] > 1:
        grad[:-1, :-1] = np.abs(np.diff(lum, axis=0))[:, :-1] + np.abs(np.diff(lum, axis=1))[:-1, :]
    return lum, grad


def region_stats(
    rgb: np.ndarray,
    mask: np.ndarray | None = None,
    colors: bool = True,
    planes: tuple[np.ndarray, np.ndarray] | None = None,
) -> RegionStats:
    """Brightness = mean luminance, contrast = its spread, sharpness = mean gradient; each in 0..100.
    `planes` passes the image's luminance and gradient in when several regions of one image are measured."""
    lum, grad = planes if planes is not None else _luminance_and_gradient(rgb)
    selected = (slice(None),) if mask is None else (mask,)
    values, grads = lum[selected], grad[selected]
    if values.size == 0:
        return RegionStats(0.0, 0.0, 0.0)
    pixels = rgb[selected] if mask is not None else rgb
    return RegionStats(
        brightness=round(float(values.mean()) / 255 * 100, 4),
        sharpness=round(min(100.0, float(grads.mean()) * 4), 4),
        contrast=round(min(100.0, float(values.std()) / 128 * 100), 4),
        colors=dominant_colors(pixels[::4] if mask is not None else pixels[::4, ::4]) if colors else (),
    )


def analyse_pixels(rgb: np.ndarray) -> Analysis:
    """The full analysis of an upright RGB array."""
    height, width = rgb.shape[:2]
    objects = []
    foreground = np.zeros((height, width), dtype=bool)
    for kind, box in find_objects(rgb):
        objects.append(SeenObject(kind, box, region_stats(box.crop(rgb))))
        foreground[box.top : box.top + box.height, box.left : box.left + box.width] = True
    planes = _luminance_and_gradient(rgb)
    return Analysis(
        width=width,
        height=height,
        objects=tuple(objects),
        image=region_stats(rgb, planes=planes),
        foreground=region_stats(rgb, foreground, planes=planes),
        background=region_stats(rgb, ~foreground, planes=planes),
    )


# ---- cache ----------------------------------------------------------------------------------------------


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AnalysisCache:
    """A bounded LRU from sha256(bytes) to the analysis, or to the (equally deterministic) error they produce.

    Two threads asking for the same new image may both compute it; the answers are identical, so that is
    harmless and cheaper than a per-key lock.
    """

    def __init__(self, analyse: Callable[[bytes], Analysis], max_entries: int = 8192) -> None:
        self._analyse = analyse
        self._max = max_entries
        self._entries: OrderedDict[str, Analysis | ServiceError] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def get(self, data: bytes, digest: str | None = None) -> Analysis:
        key = digest or content_digest(data)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is None:
            self.misses += 1
            try:
                hit = self._analyse(data)
            except ServiceError as exc:  # a rejected image is a deterministic answer too: cache it
                hit = exc
            with self._lock:
                self._entries[key] = hit
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        if isinstance(hit, ServiceError):
            raise ServiceError(hit.code, hit.message)  # a fresh instance: tracebacks are per raise
        return hit
