"""face_search in the driver: how many of user_search's reference faces its collection holds.

A collection `user_search` keeps its users in also holds their reference faces (ExternalImageId
`::ref:...`, `batch.core.external_ids.reference_image_id`). They are the users' faces, not faces of
indexed images: face_search leaves them out of `face_matches` (`user_matches` has the users). So that
they take none of a searched face's `max_matches`, each search asks for as many more matches as the
collection holds reference faces: `ReferenceCount` counts them before the batches (ListFaces, every
page; DescribeCollection first: nothing to count in a missing collection, which `index_faces` creates,
or an empty one).
It runs after user_search's sync when both are in the run (`face_search.AFTER`), so the faces that sync
indexes are counted. A dry run counts nothing (it sends no search).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from batch.analyses.base import DriverHooks, DriverReport, DriverSetup
from batch.aws.rekognition import driver_caller
from batch.core.calls import CallCounts
from batch.core.external_ids import REFERENCE_PREFIX
from batch.faces.sync import CollectionSync, face_pages

NAME = "face_search"


class ReferenceCount(DriverHooks):
    """Sets face_search's `reference_faces` (see the module docstring); its calls are collection
    housekeeping, priced at `[pricing] storage_operation`."""

    def __init__(self, setup: DriverSetup) -> None:
        self._setup = setup
        self._counts = CallCounts()

    def prepare(self, settings: Any) -> Any:
        if self._setup.dry_run:
            return settings
        caller = driver_caller(self._setup.config, NAME, self._counts, self._setup.quotas)
        described = CollectionSync(caller, settings.collection, self._counts).describe()
        if described is None or not described.get("FaceCount"):
            return settings
        found = sum(
            (face.get("ExternalImageId") or "").startswith(REFERENCE_PREFIX)
            for page in face_pages(caller, settings.collection)
            for face in page
        )
        return dataclasses.replace(settings, reference_faces=found)

    def report(self) -> DriverReport:
        calls = Counter(self._counts.attempts)
        answered = sum(n for (_, outcome), n in calls.items() if outcome == "ok")
        price = self._setup.config.prices["storage_operation"]
        return DriverReport(storage_calls=calls, storage_cost_usd=answered * price)
