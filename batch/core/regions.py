"""Several Rekognition regions in one run: which region each image's stateless calls go to, and how the
image travels there. Pure.

The run's own region (`rekognition.region`, the "home") keeps every collection operation; the stateless
analyses (`Analysis.fans_out`) of each image go to one region of `rekognition.regions`, chosen from a
hash of the image's key and ETag (`RegionPlan.region_for`), so a retry or a `--resume` of the image picks
the same region and reuses the answers its record holds. Each region's share of the images is its quota
share (`region_weights`). An image goes as an S3Object reference to the region of its bucket and as its
bytes elsewhere; one over the 5 MB a request carries stays in the bucket's region. The cluster's limiter
holds one bucket per (region, operation) (`limiter_key`). See docs/design/regions.md.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from batch.core.image_checks import MAX_REQUEST_BYTES

__all__ = [
    "HIGH_QUOTA_REGIONS",
    "RegionBalancer",
    "RegionPlan",
    "choose_region",
    "key_fraction",
    "limiter_key",
    "parse_regions",
    "published_default",
    "region_weights",
    "split_region",
]

#: Regions where AWS's default calls-per-second quota of the Rekognition Image operations is 50; 5 in
#: the others (docs/design/regions.md names the sources and what could not be confirmed).
HIGH_QUOTA_REGIONS = frozenset({"us-east-1", "us-west-2", "eu-west-1"})
_HIGH_DEFAULT, _LOW_DEFAULT = 50.0, 5.0
#: An AWS region's name: "us-west-2", "ap-southeast-1", "us-gov-west-1".
_REGION_NAME = re.compile(r"[a-z]{2,}(-[a-z]+)+-\d+")
#: Between an operation and a region in a limiter key ("DetectLabels@us-west-2").
_SEPARATOR = "@"


def published_default(region: str) -> float:
    """AWS's default calls-per-second quota of a Rekognition Image operation in `region`."""
    return _HIGH_DEFAULT if region in HIGH_QUOTA_REGIONS else _LOW_DEFAULT


def parse_regions(value: str | Iterable[str]) -> tuple[str, ...]:
    """`"us-east-1, us-west-2"` or a list -> ("us-east-1", "us-west-2"); ValueError naming a bad or
    repeated name."""
    listed = value.split(",") if isinstance(value, str) else [str(name) for name in value]
    names = [name.strip() for name in listed if name.strip()]
    for name in names:
        if not _REGION_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a region name (e.g. us-west-2)")
    if len(set(names)) != len(names):
        raise ValueError(f"a region is listed twice: {names}")
    return tuple(names)


def limiter_key(operation: str, region: str, home: str) -> str:
    """The cluster limiter's bucket of `operation` in `region`: the operation's own name in the home
    region (a one-region run is unchanged), "Operation@region" elsewhere."""
    return operation if region == home else f"{operation}{_SEPARATOR}{region}"


def split_region(key: str) -> tuple[str, str | None]:
    """`limiter_key`'s inverse: (operation, region or None for the home region)."""
    operation, _, region = key.partition(_SEPARATOR)
    return operation, region or None


def region_weights(quotas: Mapping[str, Mapping[str, float]], operations: Iterable[str]) -> dict[str, float]:
    """Each region's share of the images, from its quotas (region -> operation -> calls/s) for the
    `operations` every image calls there: proportional to the smallest of them, so no region's
    slowest operation holds the others back. Shares sum to 1; a region whose quota is missing for one
    of the operations gets none. With no operations (no stateless analysis), the first region gets all.
    """
    wanted = list(operations)
    regions = list(quotas)
    if not regions:
        raise ValueError("no regions")
    if not wanted:
        return {region: float(i == 0) for i, region in enumerate(regions)}
    floors = {r: min((quotas[r].get(op, 0.0) for op in wanted), default=0.0) for r in regions}
    total = sum(floors.values())
    if not (total > 0 and math.isfinite(total)):
        raise ValueError(f"no region has a quota for every one of {wanted}")
    return {region: floor / total for region, floor in floors.items()}


def key_fraction(key: str, etag: str) -> float:
    """A number in [0, 1) fixed by the image (its key and ETag), spread evenly over images."""
    digest = hashlib.sha256(f"{key}\0{etag}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_region(weights: Sequence[tuple[str, float]], fraction: float) -> str:
    """The region whose slice of [0, 1) holds `fraction`, slices laid out in order, each as wide as its
    weight (weights summing to 1). A region of weight 0 is never chosen."""
    edges, total = [], 0.0
    for _, weight in weights:
        total += weight
        edges.append(total)
    index = bisect.bisect_right(edges, fraction * total)
    while index < len(weights) and weights[index][1] <= 0:  # float rounding at an edge
        index += 1
    if index >= len(weights):
        index = max(i for i, (_, weight) in enumerate(weights) if weight > 0)
    return weights[index][0]


@dataclass(frozen=True)
class RegionPlan:
    """Where a run's stateless calls go: picklable, it travels with each task."""

    #: The run's own region (`rekognition.region`): collections, and every call of a one-region run.
    home: str
    #: Region -> share of the images, in the order the user listed the regions.
    weights: tuple[tuple[str, float], ...]
    #: The input bucket's region; images go there as S3Object references, elsewhere as bytes.
    bucket_region: str

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(region for region, _ in self.weights)

    @property
    def s3_region(self) -> str:
        """Where an image that cannot go as bytes is sent: the bucket's region if the run uses it,
        else the home region (an S3Object there needs the bucket in that region, as in a one-region run)."""
        return self.bucket_region if self.bucket_region in self.regions else self.home

    def region_for(self, key: str, etag: str, size: int) -> str:
        """The region of the image's stateless calls: its hash's region if it can go there (as a
        reference, or as bytes of at most 5 MB), else `s3_region`."""
        region = choose_region(self.weights, key_fraction(key, etag))
        if region != self.s3_region and size > MAX_REQUEST_BYTES:
            return self.s3_region
        return region

    def as_bytes(self, region: str) -> bool:
        """Must an image sent to `region` travel as its bytes (the bucket is elsewhere)?"""
        return region != self.s3_region


class RegionBalancer:
    """The driver's placement of the images it plans, in order: each image's own region
    (`RegionPlan.region_for`) unless that region is more than `slack` images ahead of its share of
    the images placed so far; then the region furthest behind its share that can take it.

    A hash alone drifts from the shares by about the square root of the images, and the run ends when
    the busiest region does; this bounds the drift to `slack` images while moving only the few images
    that would widen it (the others keep the region a retry or a `--resume` would choose)."""

    def __init__(self, plan: RegionPlan, slack: int = 4) -> None:
        self._plan, self._slack = plan, slack
        self._weights = dict(plan.weights)
        self._placed: Counter[str] = Counter()

    def place(self, key: str, etag: str, size: int) -> str:
        region = self._plan.region_for(key, etag, size)
        total = sum(self._placed.values()) + 1
        ahead = self._placed[region] + 1 - self._weights[region] * total
        if ahead > self._slack and size <= MAX_REQUEST_BYTES:  # a larger one has one region only
            region = max(self._weights, key=lambda r: self._weights[r] * total - self._placed[r])
        self._placed[region] += 1
        return region
