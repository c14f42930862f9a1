"""The analyses: one module per Rekognition operation, listed in `REGISTRY`.

Each module (`labels`, `faces`, `text`, `moderation`, `celebrities`, and the face collection and
comparison ones) holds, with no I/O:

* `Settings`: a frozen dataclass of its config options with defaults and `from_mapping(m, where)`;
* `build_request(image, settings)`: the keyword arguments of the boto3 call;
* `TABLES`: the full pyarrow schemas (common + specific) of the tables it fills;
* `flatten(response, placement)`: rows per table, without the common columns; a key for every table
  in `TABLES`, with an empty list when the response has nothing for it. Never raises on a response
  of the modelled shape (any member may be missing).

How the job uses one analysis for one image:

    analysis = REGISTRY["labels"]
    settings = analysis.settings_type.from_mapping(config.get("labels", {}), "analyses.labels")
    response = getattr(client, analysis.client_method)(**analysis.build_request(image, settings))
    correction = analysis.orientation_correction(response)
    placement = BoxPlacement.for_response(..., orientation_correction=correction)
    for table, rows in analysis.flatten(response, placement).items(): ...  # add run_id, bucket, key, etag

Adding an analysis = one module with those names + one line in `REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pyarrow as pa

from batch.analyses import (
    celebrities,
    compare_faces,
    face_search,
    faces,
    index_faces,
    labels,
    moderation,
    text,
)
from batch.analyses._multi import Call, ImageInput, MultiOutcome
from batch.core.errors import ConfigError
from batch.core.geometry import BoxPlacement
from batch.core.tables import JOB_TABLES

__all__ = [
    "REGISTRY",
    "Analysis",
    "all_tables",
    "in_run_order",
    "select",
    "settings_digest",
    "settled_digests",
]


@dataclass(frozen=True)
class Analysis:
    """One Rekognition operation and everything needed to call it and store its answer."""

    name: str
    operation: str
    client_method: str
    settings_type: type[Any]
    tables: Mapping[str, pa.Schema]
    build_request: Callable[[Mapping[str, Any], Any], dict[str, Any]]
    flatten: Callable[[Mapping[str, Any], BoxPlacement], dict[str, list[dict[str, Any]]]]
    orientation_field: str | None
    #: Request members that depend on the image's key (IndexFaces' ExternalImageId); None: none.
    image_request: Callable[[str, Any], dict[str, Any]] | None = None
    #: Columns every row shares, from the settings (IndexFaces' collection_id); None: none.
    row_columns: Callable[[Any], dict[str, Any]] | None = None
    #: Several calls per image (face search, comparison): `run(ImageInput, settings, call)` replaces
    #: build_request + one call + flatten (`batch.analyses._multi`); None: one call per image.
    run: Callable[[ImageInput, Any, Call], MultiOutcome] | None = None
    #: Every operation the analysis calls (rate limited and priced as the analysis); () = (operation,).
    extra_operations: tuple[str, ...] = ()
    #: Analyses that run before this one for the same image when both are asked for (their rows are read).
    after: tuple[str, ...] = ()
    #: What `settings_digest` hashes of the settings (compare_faces: its resolved references); None:
    #: every field of the settings dataclass.
    document: Callable[[Any], dict[str, Any]] | None = None
    #: Calls of `operation` per image at least, from the settings, for the dry run; None: one.
    calls_per_image: Callable[[Any], int] | None = None
    #: The settings' parts, settled one by one (`parts`); None: settled whole.
    part_documents: Callable[[Any], list[dict[str, Any]] | None] | None = None
    #: The settings narrowed to some parts (`only_parts`).
    with_parts: Callable[[Any, tuple[int, ...]], Any] | None = None

    @classmethod
    def from_module(cls, module: ModuleType) -> Analysis:
        """The analysis an analysis module defines (NAME, OPERATION, CLIENT_METHOD, Settings, TABLES,
        build_request, flatten, ORIENTATION_FIELD; optionally image_request, row_columns, run,
        OPERATIONS, AFTER, settings_document, planned_calls, settings_parts and with_parts)."""
        return cls(
            name=module.NAME,
            operation=module.OPERATION,
            client_method=module.CLIENT_METHOD,
            settings_type=module.Settings,
            tables=module.TABLES,
            build_request=module.build_request,
            flatten=module.flatten,
            orientation_field=module.ORIENTATION_FIELD,
            image_request=getattr(module, "image_request", None),
            row_columns=getattr(module, "row_columns", None),
            run=getattr(module, "run", None),
            extra_operations=tuple(o for o in getattr(module, "OPERATIONS", ()) if o != module.OPERATION),
            after=getattr(module, "AFTER", ()),
            document=getattr(module, "settings_document", None),
            calls_per_image=getattr(module, "planned_calls", None),
            part_documents=getattr(module, "settings_parts", None),
            with_parts=getattr(module, "with_parts", None),
        )

    @property
    def operations(self) -> tuple[str, ...]:
        """Every operation this analysis may call, its main one first."""
        return (self.operation, *self.extra_operations)

    def request(self, image: Mapping[str, Any], key: str, settings: Any) -> dict[str, Any]:
        """The keyword arguments of the boto3 call for the image stored under `key`."""
        request = self.build_request(image, settings)
        if self.image_request is not None:
            request.update(self.image_request(key, settings))
        return request

    def shared_columns(self, settings: Any) -> dict[str, Any]:
        """The columns every row of this analysis shares under `settings` (most analyses: none)."""
        return self.row_columns(settings) if self.row_columns is not None else {}

    def settings_document(self, settings: Any) -> dict[str, Any]:
        """The settings as `settings_digest` and the config digest see them (JSON-ready)."""
        return self.document(settings) if self.document is not None else dataclasses.asdict(settings)

    def parts(self, settings: Any) -> list[dict[str, Any]] | None:
        """The settings split into parts an image is settled for one by one (compare_faces: one per
        reference photo), as JSON-ready documents; None: the analysis is settled whole."""
        return self.part_documents(settings) if self.part_documents is not None else None

    def only_parts(self, settings: Any, indices: tuple[int, ...]) -> Any:
        """`settings` narrowed to the parts at `indices` (of `parts(settings)`)."""
        if self.with_parts is None:
            raise TypeError(f"{self.name} has no parts")
        return self.with_parts(settings, indices)

    def planned_calls(self, settings: Any) -> int:
        """Calls of the main operation one image costs at least (the dry run's count)."""
        return self.calls_per_image(settings) if self.calls_per_image is not None else 1

    def default_settings(self) -> Any:
        """The settings when the config says nothing about this analysis."""
        return self.settings_type()

    def orientation_correction(self, response: Mapping[str, Any]) -> str | None:
        """The response's OrientationCorrection (None for operations without one), for
        `BoxPlacement.for_response`."""
        if self.orientation_field is None:
            return None
        return response.get(self.orientation_field)


REGISTRY: dict[str, Analysis] = {
    analysis.name: analysis
    for analysis in map(
        Analysis.from_module,
        (labels, faces, text, moderation, celebrities, index_faces, face_search, compare_faces),
    )
}


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


def in_run_order(names: Iterable[str], start: int = 0) -> tuple[str, ...]:
    """`names` in the order one image runs them: as given, rotated to begin at position `start`
    (modulo their number), except that an analysis moves after the ones its `after` names
    (face_search reads the rows of index_faces and faces).

    The job rotates by the image's place in its batch. Each image runs its analyses one after the
    other; had every image begun with the same one, the last operation would get its first call a
    few latencies into the run and its last call as long after the others' ended: a measured run
    spent 1 s of its 22 with some operations' quota unused at each end. Rotated, every operation
    has calls waiting from the first second to the last.
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
