"""The job side of face collections: keep a collection equal to the bucket (driver only).

The rule: under the run's prefix, the collection holds exactly the faces the committed `indexed_faces`
rows list for each key's current ETag. The driver enforces it around the batches:

1. At start, `CollectionSync.open`: the collection is created when missing; every face is listed
   (`ListFaces`); a face of a key under the prefix that no committed `indexed_faces` row (nor a batch a
   resumed run keeps) knows is an orphan (a crash between IndexFaces and the commit, a retried
   IndexFaces whose first answer was lost) and is deleted at once.
2. Before a batch is submitted, `before_indexing`: the faces of the batch's images still in the
   collection (an older ETag, an earlier failed attempt) are deleted, so indexing never duplicates.
3. With `--prune`, after the listing: the faces of keys under the prefix that were not listed.

A dry run walks the same plan without deleting (`CollectionSync.preview`, `StorageForecast`): it calls
only DescribeCollection and ListFaces.

Faces whose ExternalImageId this job did not make, or whose key is outside the prefix, are left alone:
several prefixes can share a collection. `Reconciliation` is the pure part; `CollectionSync` does the
calls through `batch.aws.rekognition.RekognitionCaller` (rate limit and retries as every call).
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from batch.analyses.base import DriverHooks, DriverReport, DriverSetup
from batch.aws.rekognition import RekognitionCaller, driver_caller
from batch.config.model import RunConfig
from batch.core.calls import CallCounts, CallResult
from batch.core.errors import CollectionUnavailable, ConfigError, OutputUnwritable, RekbatchError
from batch.core.external_ids import external_image_id, is_digest_id, key_of

logger = logging.getLogger(__name__)

#: `FaceIdList` of DeleteFaces and `PageSize` of ListFaces: at most 4,096 (botocore model).
MAX_FACE_IDS = 4096


@dataclass(frozen=True)
class StoredFace:
    """A face as ListFaces shows it: what reconciliation needs."""

    face_id: str
    external_image_id: str | None


def owned(external_id: str | None, prefix: str, keys: Mapping[str, str]) -> bool:
    """Whether the job manages this face: its id is one `batch.core.external_ids` makes, for a key under
    `prefix` (a digest id is looked up in `keys`, external id -> key, from `indexed_faces`)."""
    if external_id is None:
        return False
    key = key_of(external_id)
    if key is None and is_digest_id(external_id):
        key = keys.get(external_id)
        if key is None:
            return True  # a digest id no committed row knows: only an interrupted run of ours makes one
    return key is not None and key.startswith(prefix)


@dataclass
class Reconciliation:
    """What to delete so the collection matches the tables. Pure: built from lists, no calls."""

    #: Faces of the prefix that no committed row knows: delete at once.
    orphans: list[str]
    #: External id -> the known faces stored for it, of keys the listing has not shown yet.
    stored: dict[str, list[str]] = field(default_factory=dict)
    #: The same, for keys the listing has shown (kept unless their image is indexed again).
    seen: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def plan(
        cls, faces: Iterable[StoredFace], known: set[str], prefix: str, keys: Mapping[str, str]
    ) -> Reconciliation:
        """Split the collection's faces of the prefix into orphans and known faces by external id."""
        orphans: list[str] = []
        stored: dict[str, list[str]] = {}
        for face in faces:
            if not owned(face.external_image_id, prefix, keys):
                continue
            if face.face_id not in known:
                orphans.append(face.face_id)
            else:
                stored.setdefault(face.external_image_id or "", []).append(face.face_id)
        return cls(orphans, stored)

    def listed(self, key: str) -> None:
        """The listing shows the key: `unlisted` must not return its faces."""
        external = external_image_id(key)
        if external in self.stored:
            self.seen[external] = self.stored.pop(external)

    def take(self, keys: Iterable[str]) -> list[str]:
        """The stored faces of these keys (about to be indexed again), forgotten once returned."""
        taken = []
        for key in keys:
            external = external_image_id(key)
            taken += self.seen.pop(external, []) + self.stored.pop(external, [])
        return taken

    def unlisted(self) -> list[str]:
        """The faces of keys the listing did not show (call once the whole listing went through)."""
        faces = [face for ids in self.stored.values() for face in ids]
        self.stored.clear()
        return faces


def chunks(items: Sequence[str], size: int = MAX_FACE_IDS) -> Iterator[list[str]]:
    """`items` in lists of at most `size` (DeleteFaces takes 4,096 ids at most)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


#: The calls that keep a collection in sync: priced at `[pricing] storage_operation`, apart from the
#: per-image calls (IndexFaces and the other analyses).
STORAGE_OPERATIONS = ("DescribeCollection", "CreateCollection", "ListFaces", "DeleteFaces")


@dataclass
class StorageForecast:
    """What a run would do to the collection, as a dry run tells it from ListFaces, the committed
    `indexed_faces` rows and the listing. Pure. The faces to delete are exact; the DeleteFaces calls are
    at most (a run deletes the stored faces of a whole batch's images in one call); the faces stored
    after are an estimate, since a run learns how many faces a new image has only by indexing it."""

    exists: bool
    faces_before: int = 0
    list_faces_pages: int = 1
    orphans: int = 0
    #: Stored faces of images to index again (a new ETag, or settings changed), and how many images.
    replaced: int = 0
    replaced_images: int = 0
    #: With --prune (and a listing `--limit` did not cut): the faces of keys no longer listed.
    pruning: bool = False
    pruned: int = 0
    images_to_index: int = 0
    #: Faces per key the collection holds for the prefix: the guess for each image to index.
    faces_per_image: float = 1.0

    def to_index(self, stored_faces: int, *, sent: bool) -> None:
        """One image a run would index (`sent`: not zero bytes), after deleting its `stored_faces`."""
        self.replaced += stored_faces
        self.replaced_images += stored_faces > 0
        self.images_to_index += sent

    @property
    def deleted(self) -> int:
        return self.orphans + self.replaced + self.pruned

    @property
    def faces_after(self) -> int:
        return self.faces_before - self.deleted + round(self.images_to_index * self.faces_per_image)

    def calls(self) -> Counter[str]:
        """The storage calls of a run that would succeed (those a run prices): DescribeCollection at its
        start (unless the collection is missing: that one fails) and end, CreateCollection when missing,
        ListFaces pages, and at most this many DeleteFaces."""
        deletes = math.ceil(self.orphans / MAX_FACE_IDS) + self.replaced_images
        deletes += math.ceil(self.pruned / MAX_FACE_IDS)
        calls = Counter(
            {"DescribeCollection": 2, "CreateCollection": 0}
            if self.exists
            else {"DescribeCollection": 1, "CreateCollection": 1}
        )
        calls.update({"ListFaces": self.list_faces_pages, "DeleteFaces": deletes})
        return +calls


def collection_caller(
    config: RunConfig, counts: CallCounts, quotas: Mapping[str, float] | None = None
) -> RekognitionCaller:
    """A caller for collection operations made from one process (the driver, a `rekbatch collection`
    command): each operation at its quota in `quotas`, else the `index_faces` quota; the configured
    retry policy, the calls recorded in `counts`."""
    return driver_caller(config, "index_faces", counts, quotas)


class CollectionSync:
    """One collection, kept in sync by the driver: create, list, delete. See the module docstring."""

    def __init__(self, caller: RekognitionCaller, collection: str, counts: CallCounts) -> None:
        self.caller = caller
        self.collection = collection
        #: The calls this sync made, by operation and outcome (the caller records them here).
        self.counts = counts
        #: Set once every listed key went through `plan.listed`: only then may `prune` run.
        self.listing_complete = False
        self.deleted = 0
        self.created = False
        #: Faces stored when the run started (DescribeCollection; 0 for a collection it created).
        self.faces_before = 0
        self.plan = Reconciliation([])
        #: (key, ETag) of images the tables say are indexed whose faces the collection lost: the job
        #: indexes them again (set by `open` and `preview`).
        self.lost: set[tuple[str, str]] = set()
        #: A dry run's account of what a run would do (`preview`, then `foresee_indexing`).
        self.forecast = StorageForecast(exists=False)

    def open(self, known: KnownFaces, prefix: str) -> None:
        """Create the collection when missing, list its faces, delete the orphans, and find the images
        whose faces it lost (`lost`)."""
        self.ensure()
        self._plan(known, prefix)
        if self.plan.orphans:
            logger.warning("collection %s: deleting %d orphan faces", self.collection, len(self.plan.orphans))
            self.delete(self.plan.orphans)

    def preview(self, known: KnownFaces, prefix: str) -> StorageForecast:
        """Dry run: the plan `open` would make, calling only DescribeCollection and ListFaces, and
        deleting nothing. A missing collection is not an error: a run would create it."""
        found = self.describe()
        if found is None:
            self.lost = known.lost((), prefix)
            return self.forecast
        self._plan(known, prefix)
        per_key = [len(ids) for ids in self.plan.stored.values()]
        self.forecast = StorageForecast(
            exists=True,
            faces_before=int(found.get("FaceCount", 0)),
            list_faces_pages=self.counts.attempts[("ListFaces", "ok")],
            orphans=len(self.plan.orphans),
            faces_per_image=sum(per_key) / len(per_key) if per_key else 1.0,
        )
        return self.forecast

    def _plan(self, known: KnownFaces, prefix: str) -> None:
        self.plan = Reconciliation.plan(self.faces(), known.ids, prefix, known.digest_keys)
        self.lost = known.lost((face for ids in self.plan.stored.values() for face in ids), prefix)

    def foresee_indexing(self, key: str, *, sent: bool) -> None:
        """Dry run: an image a run would index (`sent`: not zero bytes), after `before_indexing`
        deleted its stored faces; this deletes nothing."""
        self.forecast.to_index(len(self.plan.take([key])), sent=sent)

    def foresee_prune(self) -> None:
        """Dry run, with --prune: the faces `prune` would delete (once the whole listing went through)."""
        if self.listing_complete:
            self.forecast.pruning, self.forecast.pruned = True, len(self.plan.unlisted())

    def describe(self) -> Mapping[str, Any] | None:
        """DescribeCollection's answer, or None when the collection does not exist."""
        found = self._call("describe_collection", "DescribeCollection", {"CollectionId": self.collection})
        if found.error_code == "ResourceNotFoundException":
            return None
        if found.response is None:
            raise self._error("DescribeCollection", found)
        return found.response

    def ensure(self) -> None:
        """Create the collection unless it exists; a one-line error when that is not allowed."""
        found = self.describe()
        if found is not None:
            self.faces_before = int(found.get("FaceCount", 0))
            return
        created = self._call("create_collection", "CreateCollection", {"CollectionId": self.collection})
        if not created.ok and created.error_code != "ResourceAlreadyExistsException":
            raise self._error("CreateCollection", created)
        self.created = created.ok
        logger.info("created collection %s", self.collection)

    def faces(self) -> Iterator[StoredFace]:
        """Every face of the collection, page by page (ListFaces)."""
        for page in face_pages(self.caller, self.collection):
            yield from (StoredFace(face["FaceId"], face.get("ExternalImageId")) for face in page)

    def before_indexing(self, keys: Iterable[str]) -> None:
        """Delete the stored faces of images about to be indexed again."""
        self.delete(self.plan.take(keys))

    def prune(self) -> int:
        """Delete the faces of keys the listing did not show; how many."""
        if not self.listing_complete:
            raise RuntimeError("prune before the whole listing was seen would delete listed keys' faces")
        doomed = self.plan.unlisted()
        self.delete(doomed)
        return len(doomed)

    def delete(self, face_ids: Sequence[str]) -> None:
        for chunk in chunks(face_ids):
            done = self._call(
                "delete_faces", "DeleteFaces", {"CollectionId": self.collection, "FaceIds": chunk}
            )
            if not done.ok or done.response is None:
                raise self._error("DeleteFaces", done)
            self.deleted += len(done.response.get("DeletedFaces") or [])

    def face_count(self) -> int | None:
        """Faces stored now (DescribeCollection), or None when it cannot be told."""
        try:
            found = self.describe()
        except RekbatchError:
            return None
        return None if found is None else int(found.get("FaceCount", 0))

    def _call(self, method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        return self.caller.call(method, operation, request)

    def _error(self, operation: str, call: CallResult) -> RekbatchError:
        return collection_error(self.collection, operation, call)


def face_pages(caller: RekognitionCaller, collection: str) -> Iterator[list[Mapping[str, Any]]]:
    """The collection's faces (ListFaces `Face` records), one page of at most 4,096 at a time; a page
    that fails ends it with `collection_error`."""
    request = {"CollectionId": collection, "MaxResults": MAX_FACE_IDS}
    for page in caller.pages("list_faces", "ListFaces", request):
        if page.response is None:
            raise collection_error(collection, "ListFaces", page)
        yield list(page.response.get("Faces") or [])


def collection_error(collection: str | None, operation: str, call: CallResult) -> RekbatchError:
    """A failed collection call as a one-line error: ConfigError (exit 2) when Rekognition refuses the
    request itself (a bad name), else CollectionUnavailable (exit 3): no such collection, access
    denied, Rekognition kept failing."""
    subject = f"collection {collection}: " if collection else ""
    if call.error_code == "ResourceNotFoundException":
        return CollectionUnavailable(f"{subject}no such collection ({operation}: {call.error_code})")
    reason = f"{subject}{operation}: {call.error_code}: {call.message}"
    if call.error_code in ("InvalidParameterException", "ValidationException"):
        return ConfigError(reason)
    return CollectionUnavailable(reason)


@dataclass
class KnownFaces:
    """What the committed `indexed_faces` rows of one collection say (`known_faces`)."""

    #: Every face id the rows list (any key, any ETag, any run).
    ids: set[str] = field(default_factory=set)
    #: Digest external id -> key, for `owned`.
    digest_keys: dict[str, str] = field(default_factory=dict)
    #: (key, ETag) -> the faces of the last committed run that indexed that image.
    latest: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _run_of: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)

    def add(self, run_id: str, key: str, etag: str, face_id: str, external_id: str | None) -> None:
        """One row, in commit order: a later run's rows of an image replace an earlier run's."""
        self.ids.add(face_id)
        if external_id and is_digest_id(external_id):
            self.digest_keys[external_id] = key
        image = (key, etag)
        if image not in self.latest or self._run_of[image] != run_id:
            self._run_of[image] = run_id
            self.latest[image] = set()
        self.latest[image].add(face_id)

    def lost(self, stored: Iterable[str], prefix: str) -> set[tuple[str, str]]:
        """The images under `prefix` whose last indexing left faces the collection no longer holds
        (`stored`: the collection's face ids of the prefix): deleted by hand, or the collection was
        deleted and created again. They must be indexed again, or the collection stays short of them."""
        present = set(stored)
        return {
            image for image, faces in self.latest.items() if image[0].startswith(prefix) and faces - present
        }


def known_faces(store: Any, manifests: Sequence[Any], kept: Iterable[Any], collection: str) -> KnownFaces:
    """What the tables know of `collection`: committed `indexed_faces` rows, oldest commit first, then
    the files of batches a resumed run keeps."""
    committed = [entry for manifest in manifests for entry in manifest.files_of("indexed_faces")]
    entries = [*committed, *(f for f in kept if f.table == "indexed_faces")]
    known = KnownFaces()
    columns = ["run_id", "key", "etag", "collection_id", "face_id", "external_image_id"]
    for entry in entries:
        body = store.read(entry.path)
        if body is None:
            raise OutputUnwritable(f"{store.destination.location(entry.path)} is committed but missing")
        for row in pq.read_table(
            io.BytesIO(body), columns=columns, use_threads=False, pre_buffer=False
        ).to_pylist():
            if row["collection_id"] == collection:
                known.add(row["run_id"], row["key"], row["etag"], row["face_id"], row["external_image_id"])
    return known


#: The JSON summary's collection fields (`CollectionHooks.report` fills them), with their defaults.
COLLECTION_SUMMARY_FIELDS: dict[str, Any] = {
    "collection": None,
    "faces_stored_before": None,
    "faces_deleted": 0,
    "faces_pruned": 0,
    "faces_stored": None,
    "storage_cost_usd_month": 0.0,
}


class CollectionHooks(DriverHooks):
    """index_faces in the driver: the collection kept in sync around the batches (`CollectionSync`);
    a dry run previews it with DescribeCollection and ListFaces only (`StorageForecast`)."""

    def __init__(self, setup: DriverSetup) -> None:
        self._setup = setup
        self._prices = setup.config.prices
        counts = CallCounts()
        caller = collection_caller(setup.config, counts, setup.quotas)
        self.sync = CollectionSync(caller, setup.settings.collection, counts)
        self._pruned = 0
        self._stored: int | None = None

    def start(self, kept: Sequence[Any]) -> None:
        setup = self._setup
        known = KnownFaces()
        if setup.store is not None:
            known = known_faces(setup.store, setup.store.manifests(), kept, self.sync.collection)
        if setup.dry_run:
            self.sync.preview(known, setup.config.prefix)
        else:
            self.sync.open(known, setup.config.prefix)

    def unsettled(self) -> Iterable[tuple[str, str]]:
        return self.sync.lost

    def listed(self, key: str) -> None:
        self.sync.plan.listed(key)

    def listing_ended(self) -> None:
        self.sync.listing_complete = True

    def planned(self, key: str, *, sent: bool) -> None:
        self.sync.foresee_indexing(key, sent=sent)

    def before_batch(self, keys: Sequence[str]) -> None:
        self.sync.before_indexing(keys)

    def finish(self, *, completed: bool) -> None:
        """Prune (when asked, and the run went through the whole listing), then count the faces."""
        if self._setup.dry_run:
            if self._setup.config.prune:
                self.sync.foresee_prune()
            return
        if self._setup.config.prune and completed and self.sync.listing_complete:
            self._pruned = self.sync.prune()
        self._stored = self.sync.face_count()

    def report(self) -> DriverReport:
        if self._setup.dry_run:
            return self._forecast_report(self.sync.forecast)
        counts = self.sync.counts.attempts
        storage = sum(n for (_, outcome), n in counts.items() if outcome == "ok")
        return self._report(
            Counter(counts),
            storage_calls=storage,
            before=self.sync.faces_before,
            deleted=self.sync.deleted,
            pruned=self._pruned,
            stored=self._stored,
        )

    def _report(
        self,
        calls: Counter[tuple[str, str]],
        *,
        storage_calls: int,
        before: int | None,
        deleted: int,
        pruned: int,
        stored: int | None,
    ) -> DriverReport:
        month = (stored or 0) * self._prices["face_storage_month"]
        storage_cost = storage_calls * self._prices["storage_operation"]
        fields = {
            "collection": self.sync.collection,
            "faces_stored_before": before,
            "faces_deleted": deleted,
            "faces_pruned": pruned,
            "faces_stored": stored,
            "storage_cost_usd_month": month,
        }
        line = (
            f"  collection {self.sync.collection}: {before} faces before, "
            f"{stored} stored (${month:.4f}/month); {deleted} deleted to stay in sync, "
            f"{pruned} of them pruned; storage calls ${storage_cost:.4f}"
        )
        return DriverReport(storage_calls=calls, storage_cost_usd=storage_cost, fields=fields, lines=[line])

    def _forecast_report(self, forecast: StorageForecast) -> DriverReport:
        calls = forecast.calls()
        report = self._report(
            Counter({(operation, "planned"): n for operation, n in calls.items()}),
            storage_calls=calls.total(),
            before=forecast.faces_before,
            deleted=forecast.deleted,
            pruned=forecast.pruned,
            stored=forecast.faces_after,
        )
        report.lines = []
        report.forecast_lines = forecast_lines(self.sync.collection, forecast, report)
        report.dry_run_called = "DescribeCollection and ListFaces only"
        return report


def forecast_lines(collection: str, forecast: StorageForecast, report: DriverReport) -> list[str]:
    """The dry run's collection lines: what a run would delete, its storage calls, faces after."""
    state = f"{forecast.faces_before} faces stored" if forecast.exists else "missing: a run would create it"
    calls = forecast.calls()
    deletes = calls.pop("DeleteFaces", 0)
    listed = ", ".join(f"{operation} {n}" for operation, n in sorted(calls.items()))
    pruned = f"{forecast.pruned} of keys no longer listed" if forecast.pruning else "no --prune"
    month = report.fields["storage_cost_usd_month"]
    return [
        f"  collection {collection}: {state}",
        f"  would delete {forecast.deleted} faces: {forecast.orphans} orphans, {forecast.replaced} of "
        f"{forecast.replaced_images} images to index again, {pruned}",
        f"  storage calls: {listed}, DeleteFaces at most {deletes}: ${report.storage_cost_usd:.4f} "
        "at list price, apart from the image calls",
        f"  faces stored after: about {forecast.faces_after} (${month:.4f}/month; "
        f"{forecast.images_to_index} images to index at {forecast.faces_per_image:.1f} faces each)",
    ]
