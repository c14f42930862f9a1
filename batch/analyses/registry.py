"""The registry of analyses, and what the job derives from it: run order, tables, digests, prices."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from batch.analyses import (
    celebrities,
    compare_faces,
    custom_labels,
    face_search,
    faces,
    index_faces,
    labels,
    moderation,
    ppe,
    text,
    user_search,
)
from batch.analyses.base import Analysis
from batch.core.errors import ConfigError
from batch.core.tables import JOB_TABLES

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Analysis",
    "all_tables",
    "default_prices",
    "in_run_order",
    "resumable_operations",
    "select",
    "settings_digest",
    "settled_digests",
]


#: The entry point group under which another distribution registers an `Analysis` of its own.
ENTRY_POINT_GROUP = "rekognition_batch.analyses"


def _registered(built_in: Iterable[Analysis]) -> dict[str, Analysis]:
    """The built-in analyses, then those other installed distributions register (`ENTRY_POINT_GROUP`):
    every process of a run (driver and Dask workers) finds the same ones."""
    registry: dict[str, Analysis] = {}
    plugins = (entry.load() for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    for analysis in (*built_in, *plugins):
        if not isinstance(analysis, Analysis):
            raise TypeError(f"{ENTRY_POINT_GROUP}: {analysis!r} is not a batch.analyses.base.Analysis")
        if analysis.name in registry:
            raise ValueError(f"analysis {analysis.name!r} is registered twice")
        registry[analysis.name] = analysis
    return registry


#: Every analysis by name. Adding one: its module, and its line here.
REGISTRY: dict[str, Analysis] = _registered(
    (
        labels.ANALYSIS,
        faces.ANALYSIS,
        text.ANALYSIS,
        moderation.ANALYSIS,
        celebrities.ANALYSIS,
        index_faces.ANALYSIS,
        face_search.ANALYSIS,
        compare_faces.ANALYSIS,
        ppe.ANALYSIS,
        custom_labels.ANALYSIS,
        user_search.ANALYSIS,
    )
)


def select(names: Iterable[str], where: str = "analyses") -> list[Analysis]:
    """The analyses named (e.g. from `--analyses labels,faces`), in the order given, without repeats.
    An unknown name raises ConfigError naming `where` and listing the known ones."""
    chosen: list[Analysis] = []
    for name in names:
        if name not in REGISTRY:
            raise ConfigError(f"{where}: unknown analysis {name!r} (known: {', '.join(REGISTRY)})")
        if REGISTRY[name] not in chosen:
            chosen.append(REGISTRY[name])
    return chosen


def resumable_operations(names: Iterable[str]) -> frozenset[str]:
    """The operations of the analyses `names` whose earlier attempts' answers a resumed attempt takes:
    those no stateful analysis (`Analysis.stateful`) among them calls."""
    chosen = [REGISTRY[name] for name in names]
    stateful = {op for analysis in chosen if analysis.stateful for op in analysis.operations}
    return frozenset(op for analysis in chosen for op in analysis.operations) - stateful


def in_run_order(names: Iterable[str], start: int = 0) -> tuple[str, ...]:
    """`names` in the order one image runs them: as given, rotated to begin at position `start`
    (modulo their number), except that an analysis moves after the ones its `after` names
    (face_search reads the rows of index_faces and faces).

    The job rotates by the image's place in its batch, so that every operation has calls waiting
    from the first second of a run to the last (docs/design/rate-limiter.md).
    """
    given = list(dict.fromkeys(names))
    shift = start % len(given) if given else 0
    pending = given[shift:] + given[:shift]
    ordered: list[str] = []
    while pending:
        ready = next(n for n in pending if not set(REGISTRY[n].after) & (set(pending) - {n}))
        ordered.append(ready)
        pending.remove(ready)
    return tuple(ordered)


def all_tables() -> dict[str, pa.Schema]:
    """Every output table: the job tables (`batch.core.tables.JOB_TABLES`) then each analysis's tables."""
    tables = dict(JOB_TABLES)
    for analysis in REGISTRY.values():
        for name, schema in analysis.tables.items():
            if name in tables:
                raise ValueError(f"table {name!r} of {analysis.name} is defined twice")
            tables[name] = schema
    return tables


def settled_digests(analysis: Analysis, settings: Any) -> str | tuple[str, ...]:
    """What a committed run records for an image this analysis settled under `settings`: the settings
    digest, or for an analysis whose settings have parts, one digest per part, so that a later run
    repeats only the parts it has not settled (compare_faces: a new reference photo is compared with
    every image, the unchanged ones are not compared again)."""
    parts = analysis.parts(settings)
    if parts is None:
        return settings_digest(analysis, settings)
    return tuple(_digest(analysis, part) for part in parts)


def settings_digest(analysis: Analysis, settings: Any) -> str:
    """A stable sha256 (hex) of an analysis's operation and settings: sorted JSON of the dataclass.

    Equal settings give equal digests across processes and Python versions, so a later run can tell
    whether an image was analysed with the same request options (for compare_faces: against the same
    reference images, `compare_faces.settings_document`).
    """
    if not isinstance(settings, analysis.settings_type):
        raise TypeError(f"expected {analysis.settings_type.__name__}, got {type(settings).__name__}")
    return _digest(analysis, analysis.settings_document(settings))


def _digest(analysis: Analysis, settings_document: Mapping[str, Any]) -> str:
    document = {"analysis": analysis.name, "operation": analysis.operation, "settings": settings_document}
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def default_prices() -> dict[str, float]:
    """The `[pricing]` defaults: each analysis's list price per call, and the other keys they read."""
    prices = {analysis.name: analysis.price for analysis in REGISTRY.values()}
    for analysis in REGISTRY.values():
        prices.update(analysis.extra_prices())
    return prices
