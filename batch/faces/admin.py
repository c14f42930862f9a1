"""The calls of `rekbatch collection list|describe|delete|export`: housekeeping of face collections.

Not the job's sync (that is `batch.faces.sync`): these read any collection of the account and region,
and `delete` removes one whole. Every call goes through `batch.aws.rekognition.RekognitionCaller`, so it is
rate-limited at its operation's quota (resolved as a run's: `batch.cli.collection.command_caller`) and
retried as the job's calls are. A call that fails ends the
command with a one-line reason: `ConfigError` (exit 2) for a name Rekognition refuses,
`CollectionUnavailable` (exit 3) for a missing collection, AccessDeniedException, or an endpoint that
kept failing (`batch.faces.sync.collection_error`). IAM: `configs/iam-collection-admin.json`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from batch.aws.rekognition import CallResult, RekognitionCaller
from batch.faces.rows import CollectionInfo
from batch.faces.sync import MAX_FACE_IDS, collection_error, face_pages


class CollectionAdmin:
    """List, describe, delete a collection, and read its faces page by page."""

    def __init__(self, caller: RekognitionCaller) -> None:
        self.caller = caller

    def collection_ids(self) -> Iterator[str]:
        """Every collection id of the account and region (ListCollections, paginated)."""
        request = {"MaxResults": MAX_FACE_IDS}
        for page in self.caller.pages("list_collections", "ListCollections", request):
            yield from self._answer(None, "ListCollections", page).get("CollectionIds") or []

    def describe(self, collection: str) -> CollectionInfo:
        found = self._call("describe_collection", "DescribeCollection", {"CollectionId": collection})
        return CollectionInfo.from_response(collection, self._answer(collection, "DescribeCollection", found))

    def delete(self, collection: str) -> None:
        done = self._call("delete_collection", "DeleteCollection", {"CollectionId": collection})
        self._answer(collection, "DeleteCollection", done)

    def face_pages(self, collection: str) -> Iterator[list[Mapping[str, Any]]]:
        """The collection's faces (ListFaces `Face` records), one page of at most 4,096 at a time."""
        return face_pages(self.caller, collection)

    def _call(self, method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        return self.caller.call(method, operation, request)

    @staticmethod
    def _answer(collection: str | None, operation: str, call: CallResult) -> Mapping[str, Any]:
        """The call's response, or the one-line error that ends the command."""
        if call.response is not None:
            return call.response
        raise collection_error(collection, operation, call)
