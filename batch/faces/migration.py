"""`rekbatch collection migrate SOURCE TARGET`, the pure part: which images to index again, which a
killed migration already did, the price, and the lines it prints. No I/O (the calls and the commit are
in `batch.cli.migrate`).

A collection is tied to the face model it was created with; moving to a newer model means indexing the
images again into a new collection (docs/faces.md, "Moving a collection to a newer face model"). The
images are those committed runs settled `index_faces` for with SOURCE (the `analyses_done` of their
`images` rows, under the settings digest of the config's `[analyses.index_faces]` with SOURCE as the
collection): the last committed ETag of each key. An image a committed run already settled with TARGET
is migrated. The `indexed_faces` rows of SOURCE check the settings: a key they list that no row settled
under that digest means the config is not the one the runs used (its digest cannot be reproduced).

An attempt records each image's (key, ETag) before its IndexFaces call (`IndexingRecord`), so a rerun
after a kill tells the faces TARGET holds apart exactly (`resume_plan`): those of the ETag planned now
(taken), of another ETag (stale: deleted), and of no attempt of the migration (left alone); and bills
the calls the killed attempt made.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batch.core.calls import IN_FLIGHT
from batch.core.external_ids import external_image_id
from batch.core.manifest import call_counts, call_list, to_line

INDEX_FACES = "IndexFaces"

__all__ = [
    "CommittedImage",
    "IndexingRecord",
    "MigrationPlan",
    "Resumed",
    "Resumption",
    "common_folder",
    "dry_run_lines",
    "listfaces_response",
    "plan_migration",
    "resume_plan",
]


@dataclass(frozen=True)
class CommittedImage:
    """One image to index again: its committed key, ETag, size and LastModified, and how many faces its
    last indexing into SOURCE stored (the estimate of what TARGET will hold)."""

    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime
    faces: int = 0


@dataclass
class MigrationPlan:
    """What a migration would index, from the committed rows alone."""

    #: The last committed (key, ETag) of each key settled with SOURCE and not yet with TARGET.
    images: list[CommittedImage] = field(default_factory=list)
    #: Images a committed run already settled with TARGET (an earlier migration, a run --collection TARGET).
    migrated: int = 0
    #: Keys SOURCE's `indexed_faces` rows list that no `images` row settled with the config's settings.
    unsettled: list[str] = field(default_factory=list)

    @property
    def faces(self) -> int:
        return sum(image.faces for image in self.images)

    def buckets(self) -> set[str]:
        return {image.bucket for image in self.images}


def _settles(row: Mapping[str, Any], analysis: str, digest: str) -> bool:
    return any(
        d["analysis"] == analysis and d["settings_digest"] == digest for d in row["analyses_done"] or ()
    )


def plan_migration(
    images_rows: Iterable[Mapping[str, Any]],
    indexed: Mapping[tuple[str, str], int],
    *,
    analysis: str,
    source_digest: str,
    target_digest: str,
) -> MigrationPlan:
    """The plan from the committed `images` rows (oldest commit first: bucket, key, etag, size_bytes,
    last_modified, analyses_done) and SOURCE's `indexed_faces` rows ((key, ETag) -> faces of its last
    indexing). Per key, the last row settled with `source_digest` names the image to index again; it is
    migrated already when a row settled that ETag with `target_digest`, or any ETag of the key in a later
    commit."""
    latest: dict[str, tuple[int, Mapping[str, Any]]] = {}
    in_target: set[tuple[str, str]] = set()
    target_last: dict[str, int] = {}
    for position, row in enumerate(images_rows):
        if _settles(row, analysis, source_digest):
            latest.pop(row["key"], None)  # re-inserted: the order of the last commit
            latest[row["key"]] = (position, row)
        if _settles(row, analysis, target_digest):
            in_target.add((row["key"], row["etag"]))
            target_last[row["key"]] = position
    plan = MigrationPlan()
    for key, (position, row) in latest.items():
        # In TARGET: that very ETag, or a later one (the image changed, and a run into TARGET indexed it).
        if (key, row["etag"]) in in_target or target_last.get(key, -1) > position:
            plan.migrated += 1
            continue
        plan.images.append(
            CommittedImage(
                row["bucket"],
                key,
                row["etag"],
                int(row["size_bytes"] or 0),
                row["last_modified"],
                indexed.get((key, row["etag"]), 0),
            )
        )
    plan.unsettled = sorted({key for key, _ in indexed} - latest.keys())
    return plan


@dataclass(frozen=True)
class IndexingRecord:
    """One image a migration attempt sends to IndexFaces, written to the run's folder before each send:
    its key and ETag, the FaceIds of the key's faces TARGET held that are not the migration's (`foreign`:
    no later attempt takes them for its own), and the attempt's calls of it so far by (operation,
    outcome), the one being sent `in-flight` (`batch.core.calls.IN_FLIGHT`)."""

    attempt: int
    key: str
    etag: str
    foreign: tuple[str, ...] = ()
    calls: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return to_line(
            {
                "attempt": self.attempt,
                "key": self.key,
                "etag": self.etag,
                "foreign": list(self.foreign),
                "calls": call_list(self.calls),
            }
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> IndexingRecord:
        d = json.loads(body)
        return cls(d["attempt"], d["key"], d["etag"], tuple(d["foreign"]), call_counts(d["calls"]))


@dataclass(frozen=True)
class Resumed:
    """One planned image of an attempt, with what earlier attempts whose batch was not written left."""

    image: CommittedImage
    #: The faces (ListFaces records) an earlier attempt's IndexFaces of this very (key, ETag) stored:
    #: the image's rows are made from them, it is not indexed again.
    recovered: tuple[Mapping[str, Any], ...] = ()
    #: FaceIds of the key's faces in TARGET that no attempt of the migration stored: left alone.
    foreign: tuple[str, ...] = ()
    #: The calls of the key earlier attempts recorded (`IndexingRecord`) in batches that were not
    #: written: billed by them, so billed by the run.
    earlier: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def repeated(self) -> Counter[tuple[str, str]]:
        """Of `earlier`: the calls thrown away, all but the one whose answer is `recovered` (the last
        one sent: in flight when its attempt died)."""
        taken = Counter({(INDEX_FACES, IN_FLIGHT): 1}) if self.recovered else Counter()
        return Counter(self.earlier) - taken


@dataclass
class Resumption:
    """How an attempt's planned images stand after the earlier attempts whose batches were not written."""

    images: list[Resumed] = field(default_factory=list)
    #: FaceIds an earlier attempt stored for another version of their image (or for a key no longer
    #: planned): delete them from TARGET before indexing.
    stale: list[str] = field(default_factory=list)

    @property
    def recovered(self) -> list[Resumed]:
        return [item for item in self.images if item.recovered]


def resume_plan(
    images: Sequence[CommittedImage],
    kept_keys: Iterable[str],
    unknown_faces: Iterable[Mapping[str, Any]],
    records: Iterable[IndexingRecord],
) -> Resumption:
    """Match the faces TARGET holds that no committed row nor kept batch lists (`unknown_faces`, ListFaces
    `Face` records) with the earlier attempts' `records`. A key's faces not in its last record's
    `foreign` were stored by that record's attempt: taken when it recorded the ETag planned now, else
    stale. Faces of a key no attempt recorded are not the migration's: the image is indexed, and they
    stay. Images of kept batches (`kept_keys`) are left out."""
    by_external: dict[str, list[Mapping[str, Any]]] = {}
    for face in unknown_faces:
        by_external.setdefault(face.get("ExternalImageId") or "", []).append(face)
    kept = set(kept_keys)
    last: dict[str, IndexingRecord] = {}
    earlier: dict[str, Counter[tuple[str, str]]] = {}
    for record in sorted(records, key=lambda r: r.attempt):
        if record.key not in kept:
            last[record.key] = record
            earlier.setdefault(record.key, Counter()).update(record.calls)
    ours = {
        key: [face for face in by_external.get(external_image_id(key), ()) if face["FaceId"] not in r.foreign]
        for key, r in last.items()
    }
    planned = {image.key: image for image in images if image.key not in kept}
    split = Resumption()
    for key, record in last.items():
        if key not in planned or planned[key].etag != record.etag:
            split.stale += [face["FaceId"] for face in ours[key]]
    for image in planned.values():
        mine = ours.get(image.key, [])
        ids = {face["FaceId"] for face in mine}
        faces = by_external.get(external_image_id(image.key), [])
        others = tuple(face["FaceId"] for face in faces if face["FaceId"] not in ids)
        same = image.key in last and last[image.key].etag == image.etag
        recovered = tuple(mine) if same else ()
        split.images.append(Resumed(image, recovered, others, dict(earlier.get(image.key, {}))))
    return split


def common_folder(keys: Iterable[str]) -> str:
    """The longest folder ("a/b/", or "" for the bucket's root) that holds every key: the input the
    migration's run row names."""
    folder: str | None = None
    for key in keys:
        here = key.rpartition("/")[0]
        if folder is None:
            folder = here
        while folder and not (here == folder or here.startswith(folder + "/")):
            folder = folder.rpartition("/")[0]
    return f"{folder}/" if folder else ""


def listfaces_response(faces: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An IndexFaces response made of the faces ListFaces shows for one image (a killed invocation's
    answer that was lost): each face's FaceDetail has only its box and confidence."""
    return {
        "FaceRecords": [
            {
                "Face": dict(face),
                "FaceDetail": {"BoundingBox": face.get("BoundingBox"), "Confidence": face.get("Confidence")},
            }
            for face in faces
        ],
        "FaceModelVersion": faces[0].get("IndexFacesModelVersion") if faces else None,
        "UnindexedFaces": [],
    }


def dry_run_lines(
    source: str, target: str, plan: MigrationPlan, prices: Mapping[str, float], *, price_key: str
) -> list[str]:
    """What `--dry-run` prints: the images, the IndexFaces price and the faces' monthly storage. The
    calls are an upper bound: a zero-byte image is never sent, but the images are not read, so those
    whose header the run's checks refuse (and the images changed since) are counted."""
    empty = sum(1 for image in plan.images if image.size == 0)
    calls = len(plan.images) - empty
    index_cost = calls * prices[price_key]
    month = plan.faces * prices["face_storage_month"]
    return [
        f"migrate {source} -> {target} (dry run: no Rekognition call)",
        f"  images to index again: {len(plan.images)} ({plan.migrated} already in {target})",
        f"  IndexFaces: at most {calls} calls, at most ${index_cost:.4f} at list price ({empty} zero-byte "
        "not sent; images not read: those whose header the checks refuse are counted, though not sent)",
        f"  faces {target} would store: about {plan.faces} (${month:.4f}/month), as {source}'s last "
        "indexing of these images stored",
    ]
