"""In-memory face collections for the local endpoint, optionally persisted to one JSON file.

A stored face is Rekognition's `Face` record plus the private `_aspect` of its box (width / height in the
upright frame), which is what face matching compares (see `similarity`). Thread-safe (one lock).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from local_stack.errors import ServiceError

log = logging.getLogger(__name__)

FACE_MODEL_VERSION = "7.0"
ACCOUNT = "123456789012"
REGION = "us-east-1"
#: Similarity falls by this many points per unit of |ln(aspect_a / aspect_b)|: equal aspects give 100,
#: an aspect 8% off gives 80 (the default threshold), 3:4 against 1:1 gives about 28.
SIMILARITY_SLOPE = 250.0


def similarity(aspect_a: float, aspect_b: float) -> float:
    """How alike two faces are, 0..100, from their boxes' aspect ratios (pure)."""
    return round(max(0.0, 100.0 - SIMILARITY_SLOPE * abs(math.log(aspect_a / aspect_b))), 4)


def collection_arn(collection_id: str) -> str:
    return f"arn:aws:rekognition:{REGION}:{ACCOUNT}:collection/{collection_id}"


def public_face(face: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in face.items() if not k.startswith("_")}


class CollectionStore:
    """Collections by id; each holds faces by FaceId in insertion order."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._collections: dict[str, dict[str, Any]] = {}
        if path and path.exists():
            self._collections = json.loads(path.read_text())
            log.info("loaded %s collections from %s", len(self._collections), path)

    def _save(self) -> None:
        if self._path:
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._collections))
            tmp.replace(self._path)

    def _get(self, collection_id: str) -> dict[str, Any]:
        try:
            return self._collections[collection_id]
        except KeyError:
            raise ServiceError(
                "ResourceNotFoundException", f"The collection id: {collection_id} does not exist"
            ) from None

    def create(self, collection_id: str) -> None:
        with self._lock:
            if collection_id in self._collections:
                raise ServiceError(
                    "ResourceAlreadyExistsException", f"The collection id: {collection_id} already exists"
                )
            self._collections[collection_id] = {
                "created": time.time(),
                "faces": {},
                "model": FACE_MODEL_VERSION,
            }
            self._save()

    def delete(self, collection_id: str) -> None:
        with self._lock:
            self._get(collection_id)
            del self._collections[collection_id]
            self._save()

    def describe(self, collection_id: str) -> tuple[int, float]:
        """(face count, creation time)."""
        with self._lock:
            coll = self._get(collection_id)
            return len(coll["faces"]), coll["created"]

    @contextmanager
    def editing(self, collection_id: str) -> Iterator[dict[str, Any]]:
        """The collection's record under the lock (users: `local_stack.users`), saved afterwards."""
        with self._lock:
            coll = self._get(collection_id)
            coll.setdefault("users", {})
            yield coll
            self._save()

    def user_count(self, collection_id: str) -> int:
        with self._lock:
            return len(self._get(collection_id).get("users", {}))

    def model(self, collection_id: str) -> str:
        """The face model the collection was created with: the endpoint's at the time (a collection
        keeps its model; a `--collections-file` may hold older ones)."""
        with self._lock:
            return str(self._get(collection_id).get("model", FACE_MODEL_VERSION))

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def add_faces(self, collection_id: str, faces: list[dict[str, Any]]) -> None:
        with self._lock:
            stored = self._get(collection_id)["faces"]
            for face in faces:
                stored[face["FaceId"]] = face
            self._save()

    def faces(self, collection_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._get(collection_id)["faces"].values())

    def delete_faces(self, collection_id: str, face_ids: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
        """(deleted ids, the faces not deleted with why: not found, or associated with a user)."""
        deleted, kept = [], []
        with self._lock:
            stored = self._get(collection_id)["faces"]
            for face_id in face_ids:
                face = stored.get(face_id)
                if face is None:
                    kept.append({"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]})
                elif face.get("UserId"):
                    reasons = ["ASSOCIATED_TO_AN_EXISTING_USER"]
                    kept.append({"FaceId": face_id, "UserId": face["UserId"], "Reasons": reasons})
                else:
                    deleted.append(stored.pop(face_id)["FaceId"])
            self._save()
        return deleted, kept
