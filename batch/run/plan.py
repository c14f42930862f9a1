"""Planning a run: the listing streamed, each image given the analyses it still needs, and prices.

An image needing none (committed runs settled them with the same ETag and settings) is `unchanged` and
is sent nowhere; `--full` ignores what committed runs settled.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from batch.analyses.base import DriverHooks
from batch.analyses.registry import REGISTRY, settings_digest, settled_digests
from batch.aws.inventory import inventory_batches, read_manifest
from batch.aws.s3 import list_pages
from batch.config.model import RunConfig, parse_s3_url
from batch.core.errors import ConfigError
from batch.core.incremental import Digests, SettledState
from batch.core.inventory import InventoryManifest
from batch.core.manifest import AttemptRecord, Ledger
from batch.core.selection import ListedObject, is_selected
from batch.run.context import ImageToAnalyse, RunContext
from batch.run.key_order import sorted_batches
from batch.storage.sink import Destination

__all__ = [
    "Counted",
    "batched",
    "inventory_manifest",
    "listed_in",
    "operation_owners",
    "operation_prices",
    "plan_images",
    "run_context",
    "selected_objects",
    "settings_digests",
    "unsettle",
    "wanted_digests",
]


def settings_digests(config: RunConfig) -> dict[str, str]:
    """Each analysis of the run -> the digest of its settings, in the run's order (the manifest's)."""
    return {name: settings_digest(REGISTRY[name], config.analysis_settings[name]) for name in config.analyses}


def wanted_digests(config: RunConfig) -> dict[str, Digests]:
    """Each analysis of the run -> what an image settled for it records (`settled_digests`), in order."""
    return {name: settled_digests(REGISTRY[name], config.analysis_settings[name]) for name in config.analyses}


def operation_owners(config: RunConfig) -> dict[str, str]:
    """Each operation the run's analyses call -> the first analysis (in the run's order) that calls it,
    whose quota and price it has (face search's DetectFaces is limited and priced once)."""
    owners: dict[str, str] = {}
    for name in config.analyses:
        for operation in REGISTRY[name].operations:
            owners.setdefault(operation, name)
    return owners


def operation_prices(config: RunConfig) -> dict[str, float]:
    """US dollars per successful call of each operation the run's analyses make."""
    return {operation: config.prices[name] for operation, name in operation_owners(config).items()}


def run_context(config: RunConfig, attempt: AttemptRecord) -> RunContext:
    """What every task of this attempt shares."""
    return RunContext(
        run_id=attempt.run_id,
        attempt=attempt.attempt,
        dt=attempt.dt,
        bucket=config.bucket,
        analyses=config.analyses,
        analysis_settings={name: config.analysis_settings[name] for name in config.analyses},
        settings_digests=wanted_digests(config),
        rekognition=config.rekognition,
        destination=Destination.for_output(config.output, config.output_options),
        compression=config.output_options.compression,
        threads_per_process=config.dask.threads_per_worker * config.rekognition.max_calls_in_flight,
    )


def selected_objects(config: RunConfig, s3: Any) -> Iterator[ListedObject]:
    """The images under the prefix in key order, streamed page by page from the listing, or from the
    inventory (`run.inventory`), selected in Arrow and sorted out of core (`batch.run.key_order`)."""
    if config.inventory:
        manifest = inventory_manifest(config, s3)
        yield from sorted_batches(inventory_batches(s3, manifest, config.prefix, config.input_filter))
        return
    objects = (obj for page in list_pages(s3, config.bucket, config.prefix) for obj in page)
    yield from (obj for obj in objects if is_selected(obj, config.prefix, config.input_filter))


def inventory_manifest(config: RunConfig, s3: Any) -> InventoryManifest:
    """The manifest of `run.inventory`, which must be an inventory of the input's bucket."""
    manifest = read_manifest(s3, *parse_s3_url(config.inventory, "run.inventory"))
    if manifest.source_bucket != config.bucket:
        raise ConfigError(
            f"run.inventory: {config.inventory} is an inventory of bucket {manifest.source_bucket!r}, "
            f"not of the input's {config.bucket!r}"
        )
    return manifest


def listed_in(objects: Iterable[ListedObject], hooks: Iterable[DriverHooks]) -> Iterator[ListedObject]:
    """The listing, telling the analyses' driver hooks each key it shows, and when it has ended."""
    hooks = list(hooks)
    for obj in objects:
        for hook in hooks:
            hook.listed(obj.key)
        yield obj
    for hook in hooks:
        hook.listing_ended()


def unsettle(state: SettledState, hooks: Mapping[str, DriverHooks]) -> None:
    """Images an analysis must run again although committed runs settled them (e.g. their faces are
    no longer in the collection), whatever the tables say."""
    for name, hook in hooks.items():
        for key, etag in hook.unsettled():
            state.unsettle(key, etag, name)


def plan_images(
    objects: Iterable[ListedObject],
    ledger: Ledger,
    state: SettledState,
    wanted: Mapping[str, Digests],
    *,
    skip_keys: frozenset[str] = frozenset(),
    limit: int = 0,
) -> Iterator[ImageToAnalyse]:
    """The listed images that need analyses, each with the analyses it needs; the others are recorded
    `unchanged` in the ledger. Keys in `skip_keys` (kept by a resumed run) are passed over; at most
    `limit` images are yielded (0: no limit) and the listing is not read past the last one. The
    listing comes in key order (`selected_objects`): a key shown twice is next to itself."""
    sent = 0
    previous = None
    for obj in objects:
        if obj.key in skip_keys:
            continue
        if obj.key == previous:
            ledger.listed_again()
            continue
        previous = obj.key
        needed = state.needed(obj.key, obj.etag, wanted)
        if needed and limit and sent >= limit:
            return
        if not needed:
            ledger.unchanged(obj.key, obj.etag)
            continue
        ledger.listed(obj.key, obj.etag)
        sent += 1
        yield ImageToAnalyse(obj, needed, _missing_parts(state, obj, needed, wanted))


def _missing_parts(
    state: SettledState, obj: ListedObject, needed: tuple[str, ...], wanted: Mapping[str, Digests]
) -> dict[str, tuple[int, ...]]:
    """For the needed analyses settled part by part, the parts this image still needs when not all."""
    parts = {}
    for name in needed:
        digests = wanted[name]
        if not isinstance(digests, str):
            missing = state.missing_parts(obj.key, obj.etag, name, digests)
            if len(missing) < len(digests):
                parts[name] = missing
    return parts


def batched(images: Iterable[ImageToAnalyse], size: Callable[[], int]) -> Iterator[list[ImageToAnalyse]]:
    """Lists of `size()` images (asked again for each batch), consuming the stream lazily."""
    iterator = iter(images)
    while batch := list(itertools.islice(iterator, size())):
        yield batch


class Counted:
    """Wraps the listing stream: counts what went through, and knows the total once it has ended."""

    def __init__(self, objects: Iterator[ListedObject]) -> None:
        self._objects = objects
        self.seen = 0
        self.total: int | None = None

    def __iter__(self) -> Iterator[ListedObject]:
        for obj in self._objects:
            self.seen += 1
            yield obj
        self.total = self.seen
