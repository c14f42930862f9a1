"""Face users from a layout of reference photos, kept in sync by the driver (`user_search`).

`--users s3://BUCKET/people/`: each folder under the prefix is one user, its name the UserId
(`batch.core.external_ids.user_id`); every image in the folder (at any depth) is one reference photo
of that person. Images directly under the prefix belong to no user and are left out. Before the
batches the driver makes the collection hold exactly that:

1. `DescribeCollection` (`CreateCollection` when missing), `ListFaces` and `ListUsers`: the state.
2. `UserPlan.of` (pure): the reference faces are those whose ExternalImageId is a
   `reference_image_id` (one per photo version); a face of a photo no longer in the layout (removed,
   or changed: its ETag is in the id) goes, a photo without its face is indexed, a face not associated
   with its folder's user is associated, a user holding our faces whose folder is gone is deleted.
3. The calls, in an order that leaves a state the next run finishes whatever call a crash stops at:
   `DeleteUser` (which disassociates its faces), `DisassociateFaces`, `DeleteFaces`, `CreateUser`,
   `IndexFaces` (`MaxFaces` 1: the photo's largest face), `AssociateFaces`. The calls that change
   users carry a `ClientRequestToken`, the same on every retry of one call.

A user no folder names and that holds none of our faces is left alone (another tool's). An unchanged
layout costs DescribeCollection, ListFaces and ListUsers, nothing billed. A dry run makes those three
calls and counts the others (`UserPlan.calls`). `UserHooks` reports the calls and writes the `users`
and `user_faces` rows of the run (docs/tables.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.base import DriverHooks, DriverReport, DriverSetup
from batch.aws.rekognition import RekognitionCaller, driver_caller
from batch.aws.s3 import list_pages
from batch.config.model import InputConfig
from batch.core.calls import CallCounts, CallResult
from batch.core.errors import ConfigError, InputUnreachable, RekbatchError
from batch.core.external_ids import REFERENCE_PREFIX, key_of, reference_image_id, user_id
from batch.core.retry import IMAGE_ERRORS, error_code
from batch.core.selection import ListedObject, is_selected
from batch.faces.references import prepared_reference, reference_location
from batch.faces.sync import CollectionSync, chunks, collection_error, face_pages

logger = logging.getLogger(__name__)

NAME = "user_search"
WHERE = f"analyses.{NAME}.users"
#: "The maximum number of total FaceIds per UserID is 100" (AssociateFaces); also its `FaceIds` limit.
MAX_USER_FACES = 100
#: `MaxResults` of ListUsers: 1..500 (botocore model).
MAX_LIST_USERS = 500
#: Calls of the sync billed per call (priced at `[pricing] user_faces`); the others are collection
#: housekeeping, priced at `[pricing] storage_operation`.
BILLED_OPERATIONS = ("IndexFaces", "AssociateFaces", "DisassociateFaces")


@dataclass(frozen=True)
class ReferencePhoto:
    """One reference photo of a user: the object version its face is indexed from."""

    bucket: str
    obj: ListedObject
    #: The folder under the layout's prefix (the person) and its UserId.
    person: str
    user: str

    @property
    def key(self) -> str:
        return self.obj.key

    @property
    def etag(self) -> str:
        return self.obj.etag

    @property
    def external_id(self) -> str:
        return reference_image_id(self.bucket, self.key, self.etag)


@dataclass(frozen=True)
class Layout:
    """The users a `--users` prefix describes: folder -> photos (pure: built from a listing)."""

    bucket: str
    prefix: str
    photos: tuple[ReferencePhoto, ...]

    @classmethod
    def of(cls, bucket: str, prefix: str, objects: Iterable[ListedObject]) -> Layout:
        """The layout of the listed images; ConfigError for a folder whose name cannot be a UserId or
        with more photos than a user holds faces."""
        photos: list[ReferencePhoto] = []
        for obj in objects:
            person, slash, _ = obj.key[len(prefix) :].partition("/")
            if not slash:
                continue  # directly under the prefix: no folder, no user
            try:
                user = user_id(person)
            except ValueError as exc:
                raise ConfigError(f"{WHERE}: s3://{bucket}/{prefix}{person}/: {exc}") from None
            photos.append(ReferencePhoto(bucket, obj, person, user))
        counts = Counter(photo.user for photo in photos)
        for user, count in counts.items():
            if count > MAX_USER_FACES:
                raise ConfigError(
                    f"{WHERE}: s3://{bucket}/{prefix}{key_of(user)}/: {count} photos; a user holds at most "
                    f"{MAX_USER_FACES} faces"
                )
        return cls(bucket, prefix, tuple(photos))

    def users(self) -> dict[str, list[ReferencePhoto]]:
        """UserId -> its photos, in listing order."""
        found: dict[str, list[ReferencePhoto]] = {}
        for photo in self.photos:
            found.setdefault(photo.user, []).append(photo)
        return found


@dataclass(frozen=True)
class StoredFace:
    """A reference face as ListFaces shows it."""

    face_id: str
    external_id: str
    user: str | None


@dataclass
class UserPlan:
    """The calls that make the collection's users match the layout (see the module docstring). Pure."""

    delete_users: list[str] = field(default_factory=list)
    disassociate: dict[str, list[str]] = field(default_factory=dict)
    delete_faces: list[str] = field(default_factory=list)
    create_users: list[str] = field(default_factory=list)
    to_index: list[ReferencePhoto] = field(default_factory=list)
    associate: dict[str, list[str]] = field(default_factory=dict)
    #: Face id -> the photo it is the face of (the faces kept).
    kept: dict[str, ReferencePhoto] = field(default_factory=dict)

    @classmethod
    def of(cls, layout: Layout, faces: Iterable[StoredFace], existing_users: Iterable[str]) -> UserPlan:
        wanted = {photo.external_id: photo for photo in layout.photos}
        users = layout.users()
        plan = cls()
        gone_users: set[str] = set()
        indexed: set[str] = set()  # external ids of the faces kept
        for face in faces:
            photo = wanted.get(face.external_id)
            if photo is not None and face.external_id not in indexed:
                indexed.add(face.external_id)
                plan.kept[face.face_id] = photo
                if face.user != photo.user:
                    if face.user is not None:  # associated by hand with another user
                        plan.disassociate.setdefault(face.user, []).append(face.face_id)
                    plan.associate.setdefault(photo.user, []).append(face.face_id)
                continue
            # The photo is gone or changed, or this is a second face of one photo (a retried IndexFaces).
            if face.user is not None and face.user in users:
                plan.disassociate.setdefault(face.user, []).append(face.face_id)
            elif face.user is not None:
                gone_users.add(face.user)
            plan.delete_faces.append(face.face_id)
        existing = set(existing_users)
        plan.delete_users = sorted(gone_users & existing)
        plan.create_users = [user for user in users if user not in existing]
        plan.to_index = [photo for photo in layout.photos if photo.external_id not in indexed]
        return plan

    @property
    def changes(self) -> bool:
        return bool(
            self.delete_users or self.disassociate or self.delete_faces or self.create_users
            or self.to_index or self.associate
        )  # fmt: skip

    def calls(self) -> Counter[str]:
        """The calls that carry the plan out (a dry run's count: the faces to associate after indexing
        are one AssociateFaces per user at most)."""
        to_associate = set(self.associate) | {photo.user for photo in self.to_index}
        calls = Counter(
            {
                "DeleteUser": len(self.delete_users),
                "DisassociateFaces": sum(
                    -(-len(ids) // MAX_USER_FACES) for ids in self.disassociate.values()
                ),
                "DeleteFaces": len(list(chunks(self.delete_faces))),
                "CreateUser": len(self.create_users),
                "IndexFaces": len(self.to_index),
                "AssociateFaces": len(to_associate),
            }
        )
        return +calls


def client_token(operation: str, collection: str, user: str, face_ids: Sequence[str] = ()) -> str:
    """A `ClientRequestToken` for one call: unique to this call (a fresh random part) and to what it
    asks; reused by the caller's retries of the call, so that a retry whose first try went through is
    not done twice. 64 characters of `[a-zA-Z0-9-_]`."""
    asked = "\0".join((operation, collection, user, *face_ids, uuid.uuid4().hex))
    return hashlib.sha256(asked.encode()).hexdigest()


def user_request(collection: str, user: str, operation: str) -> dict[str, Any]:
    """CreateUser's or DeleteUser's keyword arguments."""
    token = client_token(operation, collection, user)
    return {"CollectionId": collection, "UserId": user, "ClientRequestToken": token}


def faces_request(
    collection: str, user: str, face_ids: Sequence[str], operation: str, threshold: float | None = None
) -> dict[str, Any]:
    """AssociateFaces' (with its `UserMatchThreshold`) or DisassociateFaces' keyword arguments."""
    request: dict[str, Any] = {
        "CollectionId": collection,
        "UserId": user,
        "FaceIds": list(face_ids),
        "ClientRequestToken": client_token(operation, collection, user, face_ids),
    }
    if threshold is not None:
        request["UserMatchThreshold"] = threshold
    return request


def index_request(collection: str, image: Mapping[str, Any], photo: ReferencePhoto) -> dict[str, Any]:
    """IndexFaces' keyword arguments for a reference photo: its largest face only."""
    return {
        "CollectionId": collection,
        "Image": dict(image),
        "ExternalImageId": photo.external_id,
        "MaxFaces": 1,
        "QualityFilter": "AUTO",
        "DetectionAttributes": ["DEFAULT"],
    }


def find_layout(s3: Any, url: str) -> Layout:
    """The layout under `url` (`s3://BUCKET/PREFIX/`); ConfigError without a folder of images."""
    bucket, prefix, is_prefix = reference_location(url, WHERE)
    if not is_prefix:
        raise ConfigError(f"{WHERE}: {url!r} is not a prefix: give s3://BUCKET/PREFIX/ (one folder per user)")
    try:
        pages = list_pages(s3, bucket, prefix)
        objects = [obj for page in pages for obj in page if is_selected(obj, prefix, InputConfig())]
    except (ClientError, BotoCoreError) as exc:
        raise InputUnreachable(f"{WHERE}: cannot read {url}: {error_code(exc)}") from None
    layout = Layout.of(bucket, prefix, objects)
    if not layout.photos:
        raise ConfigError(f"{WHERE}: {url}: no folder of images under it (one folder per user)")
    return layout


@dataclass
class UserFace:
    """A reference face after the sync, for the `user_faces` table."""

    photo: ReferencePhoto
    face_id: str
    associated: bool
    reasons: list[str] = field(default_factory=list)


class UserSync:
    """The users of one collection, kept equal to a layout by the driver (see the module docstring)."""

    def __init__(
        self, caller: RekognitionCaller, collection: str, counts: CallCounts, threshold: float
    ) -> None:
        self.caller = caller
        self.collection = collection
        self.counts = counts
        self.threshold = threshold
        self.plan = UserPlan()
        self.faces: dict[str, UserFace] = {}
        self.existing: set[str] = set()

    def read(self, layout: Layout, *, create: bool) -> bool:
        """Plan from the collection's state; False when the collection is missing (and not `create`d)."""
        collection = CollectionSync(self.caller, self.collection, self.counts)
        if create:
            collection.ensure()
        elif collection.describe() is None:
            self.plan = UserPlan.of(layout, (), ())
            return False
        self.existing = set(self.users())
        self.plan = UserPlan.of(layout, self.stored_faces(), self.existing)
        return True

    def stored_faces(self) -> Iterator[StoredFace]:
        for page in face_pages(self.caller, self.collection):
            for face in page:
                external = face.get("ExternalImageId") or ""
                if external.startswith(REFERENCE_PREFIX):
                    yield StoredFace(face["FaceId"], external, face.get("UserId"))

    def users(self) -> Iterator[str]:
        request = {"CollectionId": self.collection, "MaxResults": MAX_LIST_USERS}
        for page in self.caller.pages("list_users", "ListUsers", request):
            if page.response is None:
                raise collection_error(self.collection, "ListUsers", page)
            yield from (user["UserId"] for user in page.response.get("Users") or [])

    def apply(self, s3: Any, config: Any) -> None:
        """Carry the plan out (the order of the module docstring)."""
        plan = self.plan
        for user in plan.delete_users:
            self._call("delete_user", "DeleteUser", user_request(self.collection, user, "DeleteUser"))
        for user, face_ids in plan.disassociate.items():
            for chunk in chunks(face_ids, MAX_USER_FACES):
                request = faces_request(self.collection, user, chunk, "DisassociateFaces")
                self._call("disassociate_faces", "DisassociateFaces", request)
        for chunk in chunks(plan.delete_faces):
            done = self._call(
                "delete_faces", "DeleteFaces", {"CollectionId": self.collection, "FaceIds": chunk}
            )
            for kept in done.get("UnsuccessfulFaceDeletions") or []:  # deleted again by the next run
                logger.warning(
                    "face %s not deleted: %s", kept.get("FaceId"), ", ".join(kept.get("Reasons") or [])
                )
        for user in plan.create_users:
            self._call("create_user", "CreateUser", user_request(self.collection, user, "CreateUser"))
        self.faces = {
            face_id: UserFace(photo, face_id, associated=face_id not in plan.associate.get(photo.user, ()))
            for face_id, photo in plan.kept.items()
        }
        for photo in plan.to_index:
            face_id = self.index(s3, config, photo)
            self.faces[face_id] = UserFace(photo, face_id, associated=False)
        pending: dict[str, list[str]] = {}
        for face in self.faces.values():
            if not face.associated:
                pending.setdefault(face.photo.user, []).append(face.face_id)
        for user, face_ids in pending.items():
            self.associate(user, face_ids)

    def index(self, s3: Any, config: Any, photo: ReferencePhoto) -> str:
        """Index the photo's largest face; its FaceId. ConfigError for a photo without a face."""
        where = f"{WHERE}: s3://{photo.bucket}/{photo.key}"
        prepared = prepared_reference(s3, photo.bucket, photo.obj, config, where)
        request = index_request(self.collection, prepared.image, photo)
        found = self.caller.call("index_faces", "IndexFaces", request)
        if found.response is None:
            if found.error_code in IMAGE_ERRORS:
                raise ConfigError(f"{where}: IndexFaces: {found.error_code}: {found.message}")
            raise self._error("IndexFaces", found)
        records = found.response.get("FaceRecords") or []
        if not records:
            raise ConfigError(f"{where}: no face found in it")
        return str(records[0]["Face"]["FaceId"])

    def associate(self, user: str, face_ids: Sequence[str]) -> None:
        """AssociateFaces; a face refused (another user's, or too unlike the user's faces) is told
        in the `user_faces` row and a warning, and tried again next run."""
        for chunk in chunks(face_ids, MAX_USER_FACES):
            request = faces_request(self.collection, user, chunk, "AssociateFaces", self.threshold)
            answer = self._call("associate_faces", "AssociateFaces", request)
            for done in answer.get("AssociatedFaces") or []:
                self.faces[done["FaceId"]].associated = True
            for refused in answer.get("UnsuccessfulFaceAssociations") or []:
                face = self.faces[refused["FaceId"]]
                face.reasons = list(refused.get("Reasons") or [])
                logger.warning("user %s: face of s3://%s/%s not associated: %s", user, face.photo.bucket,
                               face.photo.key, ", ".join(face.reasons))  # fmt: skip

    def _call(self, method: str, operation: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        result: CallResult = self.caller.call(method, operation, request)
        if result.response is None:
            raise self._error(operation, result)
        return result.response

    def _error(self, operation: str, call: CallResult) -> RekbatchError:
        return collection_error(self.collection, operation, call)


#: The JSON summary's user fields (`UserHooks.report` fills them), with their defaults.
USER_SUMMARY_FIELDS: dict[str, Any] = {
    "users": 0,
    "users_created": 0,
    "users_deleted": 0,
    "user_faces": 0,
    "user_faces_indexed": 0,
    "user_faces_removed": 0,
    "user_faces_unassociated": 0,
}

#: What the settings digest of `user_search` says of the users before a dry run's changes.
PENDING = (("", ("pending",)),)


def users_state(faces: Iterable[UserFace]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each user and the faces associated with it, sorted: what `user_search`'s settings digest covers,
    so that every image is searched again once the users changed."""
    found: dict[str, list[str]] = {}
    for face in faces:
        found.setdefault(face.photo.user, [])
        if face.associated:
            found[face.photo.user].append(face.face_id)
    return tuple(sorted((user, tuple(sorted(ids))) for user, ids in found.items()))


class UserHooks(DriverHooks):
    """user_search in the driver: the users synced with the layout before the attempt (their state is
    part of the settings digest); a dry run reads the state and counts the calls a run would make."""

    def __init__(self, setup: DriverSetup) -> None:
        self._setup = setup
        self._report = DriverReport(fields=dict(USER_SUMMARY_FIELDS))
        #: The calls of a sync that stopped part-way (`close` reports them: they are billed).
        self._stopped: DriverReport | None = None

    def prepare(self, settings: Any) -> Any:
        counts = CallCounts()
        try:
            return self._prepare(settings, counts)
        except BaseException:  # a photo without a face, an error, a signal: what was called is billed
            self._stopped = self._priced(counts)
            raise

    def close(self) -> DriverReport | None:
        """The calls of a sync that stopped part-way, for the summary of the run it stopped."""
        report, self._stopped = self._stopped, None
        return report

    def _prepare(self, settings: Any, counts: CallCounts) -> Any:
        setup = self._setup
        layout = find_layout(setup.s3, settings.users)
        sync = UserSync(driver_caller(setup.config, NAME, counts, setup.quotas), settings.collection, counts,
                        settings.user_match_threshold)  # fmt: skip
        exists = sync.read(layout, create=not setup.dry_run)
        plan = sync.plan
        if setup.dry_run:
            planned = plan.calls() + Counter({} if exists else {"CreateCollection": 1})
            counts.attempts.update({(operation, "planned"): n for operation, n in planned.items()})
            faces = [UserFace(photo, face_id, True) for face_id, photo in plan.kept.items()]
            state = PENDING if plan.changes else users_state(faces)
        else:
            sync.apply(setup.s3, setup.config.rekognition)
            faces = list(sync.faces.values())
            state = users_state(faces)
        self._report = self._build(counts, layout, plan, faces, settings.collection)
        return dataclasses.replace(settings, resolved=state)

    def _priced(self, counts: CallCounts) -> DriverReport:
        """The calls and their price (billed at `user_faces`, the others at `storage_operation`)."""
        prices = self._setup.config.prices
        billed = Counter({k: n for k, n in counts.attempts.items() if k[0] in BILLED_OPERATIONS})
        storage = Counter({k: n for k, n in counts.attempts.items() if k[0] not in BILLED_OPERATIONS})
        priced = ("ok", "planned")
        return DriverReport(
            calls=billed,
            storage_calls=storage,
            image_cost_usd=sum(n for (_, o), n in billed.items() if o in priced) * prices["user_faces"],
            storage_cost_usd=sum(n for (_, o), n in storage.items() if o in priced)
            * prices["storage_operation"],
        )

    def _build(
        self, counts: CallCounts, layout: Layout, plan: UserPlan, faces: list[UserFace], collection: str
    ) -> DriverReport:
        fields = {
            "users": len(layout.users()),
            "users_created": len(plan.create_users),
            "users_deleted": len(plan.delete_users),
            "user_faces": len(faces),
            "user_faces_indexed": len(plan.to_index),
            "user_faces_removed": len(plan.delete_faces),
            "user_faces_unassociated": sum(not face.associated for face in faces),
        }
        verb = "would " if self._setup.dry_run else ""
        line = (
            f"  users of collection {collection}: {fields['users']} from {layout.prefix or '/'} "
            f"({verb}create {fields['users_created']}, {verb}delete {fields['users_deleted']}); "
            f"{verb}index {fields['user_faces_indexed']} reference faces, {verb}remove "
            f"{fields['user_faces_removed']}; {fields['user_faces_unassociated']} not associated"
        )
        report = self._priced(counts)
        report.fields = fields
        report.lines = [] if self._setup.dry_run else [line]
        report.forecast_lines = [line] if self._setup.dry_run else []
        if self._setup.dry_run:
            report.dry_run_called = "DescribeCollection, ListFaces and ListUsers only"
        else:
            report.tables = user_tables(layout, plan, faces, collection)
        return report

    def report(self) -> DriverReport:
        return self._report


def user_tables(
    layout: Layout, plan: UserPlan, faces: Sequence[UserFace], collection: str
) -> dict[str, list[dict[str, Any]]]:
    """The `users` and `user_faces` rows of a run (without `run_id`): every user of the layout and
    every user deleted, every reference face kept."""
    changed = {face.photo.user for face in faces if face.face_id not in plan.kept or face.face_id
               in plan.associate.get(face.photo.user, ())} | set(plan.disassociate)  # fmt: skip
    users = []
    for user, photos in layout.users().items():
        change = "created" if user in plan.create_users else "updated" if user in changed else "unchanged"
        associated = sum(f.associated for f in faces if f.photo.user == user)
        users.append(
            _user_row(layout, collection, user, photos[0].person)
            | {"change": change, "photos": len(photos), "faces_associated": associated}
        )
    for user in plan.delete_users:
        users.append(
            _user_row(layout, collection, user, key_of(user))
            | {"change": "deleted", "photos": 0, "faces_associated": 0}
        )
    user_faces = [
        {
            "bucket": face.photo.bucket,
            "key": face.photo.key,
            "etag": face.photo.etag,
            "collection_id": collection,
            "user_id": face.photo.user,
            "person": face.photo.person,
            "face_id": face.face_id,
            "external_image_id": face.photo.external_id,
            "associated": face.associated,
            "reasons": face.reasons,
        }
        for face in faces
    ]
    return {"users": users, "user_faces": user_faces}


def _user_row(layout: Layout, collection: str, user: str, person: str | None) -> dict[str, Any]:
    return {
        "bucket": layout.bucket,
        "key": f"{layout.prefix}{person}/" if person is not None else layout.prefix,
        "etag": None,
        "collection_id": collection,
        "user_id": user,
        "person": person,
    }
