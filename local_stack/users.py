"""Face users for the local endpoint: CreateUser, DeleteUser, ListUsers, AssociateFaces,
DisassociateFaces, SearchUsers, SearchUsersByImage (shapes: botocore's model).

A user lives in its collection's record (`CollectionStore.editing`: `users`, UserId -> status) and a
stored face carries the `UserId` it is associated with, as ListFaces shows it. A user is as alike a
face as its most alike associated face (`collections.similarity` of their aspect ratios), so searching
a user finds the same person as searching its faces does. The calls that take a `ClientRequestToken`
answer a repeated token with the first answer, and a token reused for another request with
IdempotentParameterMismatchException, as the service does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from local_stack import responses as r
from local_stack.collections import FACE_MODEL_VERSION, similarity
from local_stack.errors import ServiceError, invalid_parameter
from local_stack.operations import Call, Handler, _largest_face, _page, _with_token

#: "The maximum number of total FaceIds per UserID is 100" (AssociateFaces).
MAX_USER_FACES = 100
#: AssociateFaces' default `UserMatchThreshold`; the searches' default is 80.
ASSOCIATION_THRESHOLD = 75.0
SEARCH_THRESHOLD = 80.0


def _not_found(user: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", f"The user id: {user} does not exist")


def _idempotent(coll: dict[str, Any], operation: str, req: dict[str, Any], act: Callable[[], Any]) -> Any:
    """`act()`'s answer, or the first answer to the same `ClientRequestToken`."""
    token = req.get("ClientRequestToken")
    if token is None:
        return act()
    asked = hashlib.sha256(json.dumps([operation, req], sort_keys=True).encode()).hexdigest()
    tokens = coll.setdefault("tokens", {})
    if token in tokens:
        if tokens[token]["asked"] != asked:
            raise ServiceError("IdempotentParameterMismatchException", "ClientRequestToken reused.")
        return tokens[token]["answer"]
    answer = act()
    tokens[token] = {"asked": asked, "answer": answer}
    return answer


def _user_faces(coll: dict[str, Any], user: str) -> list[dict[str, Any]]:
    return [f for f in coll["faces"].values() if f.get("UserId") == user]


def _status(coll: dict[str, Any], user: str) -> str:
    return "ACTIVE" if _user_faces(coll, user) else "CREATED"


def create_user(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    user = req["UserId"]
    with call.collections.editing(req["CollectionId"]) as coll:

        def act() -> dict[str, Any]:
            if user in coll["users"]:
                raise ServiceError("ConflictException", f"The user id: {user} already exists")
            coll["users"][user] = {}
            return {}

        answer: dict[str, Any] = _idempotent(coll, "CreateUser", req, act)
        return answer


def delete_user(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    """Its faces are disassociated, then it is deleted."""
    user = req["UserId"]
    with call.collections.editing(req["CollectionId"]) as coll:

        def act() -> dict[str, Any]:
            if user not in coll["users"]:
                raise _not_found(user)
            for face in _user_faces(coll, user):
                del face["UserId"]
            del coll["users"][user]
            return {}

        answer: dict[str, Any] = _idempotent(coll, "DeleteUser", req, act)
        return answer


def list_users(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    with call.collections.editing(req["CollectionId"]) as coll:
        users = [{"UserId": user, "UserStatus": _status(coll, user)} for user in sorted(coll["users"])]
    page, token = _page(users, req, default_size=500)
    return _with_token({"Users": page}, token)


def associate_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    """Each face joins the user unless it is another user's, missing, or (once the user has a face)
    less alike its faces than `UserMatchThreshold`; a user over 100 faces is refused whole."""
    user, threshold = req["UserId"], req.get("UserMatchThreshold", ASSOCIATION_THRESHOLD)
    with call.collections.editing(req["CollectionId"]) as coll:

        def act() -> dict[str, Any]:
            if user not in coll["users"]:
                raise _not_found(user)
            own = _user_faces(coll, user)
            new = [f for f in dict.fromkeys(req["FaceIds"]) if coll["faces"].get(f, {}).get("UserId") != user]
            if len(own) + len(new) > MAX_USER_FACES:
                raise ServiceError(
                    "ServiceQuotaExceededException", f"A user holds at most {MAX_USER_FACES} faces."
                )
            done, refused = [], []
            for face_id in new:
                face = coll["faces"].get(face_id)
                score = (
                    max((similarity(face["_aspect"], f["_aspect"]) for f in own), default=100.0)
                    if face
                    else 0.0
                )
                reason = (
                    "FACE_NOT_FOUND" if face is None
                    else "ASSOCIATED_TO_A_DIFFERENT_USER" if face.get("UserId")
                    else "LOW_MATCH_CONFIDENCE" if score < threshold
                    else None
                )  # fmt: skip
                if reason is not None:
                    refused.append(
                        {"FaceId": face_id, "UserId": user, "Confidence": score, "Reasons": [reason]}
                    )
                    continue
                face["UserId"] = user
                done.append({"FaceId": face_id})
            return {
                "AssociatedFaces": done,
                "UnsuccessfulFaceAssociations": refused,
                "UserStatus": _status(coll, user),
            }

        answer: dict[str, Any] = _idempotent(coll, "AssociateFaces", req, act)
        return answer


def disassociate_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    user = req["UserId"]
    with call.collections.editing(req["CollectionId"]) as coll:

        def act() -> dict[str, Any]:
            if user not in coll["users"]:
                raise _not_found(user)
            done, refused = [], []
            for face_id in dict.fromkeys(req["FaceIds"]):
                face = coll["faces"].get(face_id)
                if face is None or face.get("UserId") not in (None, user):
                    reason = "FACE_NOT_FOUND" if face is None else "ASSOCIATED_TO_A_DIFFERENT_USER"
                    refused.append({"FaceId": face_id, "UserId": user, "Reasons": [reason]})
                elif face.get("UserId") == user:  # one not associated is ignored
                    del face["UserId"]
                    done.append({"FaceId": face_id})
            status = _status(coll, user)
            return {
                "DisassociatedFaces": done,
                "UnsuccessfulFaceDisassociations": refused,
                "UserStatus": status,
            }

        answer: dict[str, Any] = _idempotent(coll, "DisassociateFaces", req, act)
        return answer


def _user_matches(coll: dict[str, Any], aspects: list[float], req: dict[str, Any]) -> list[dict[str, Any]]:
    """Every user with a face, by how alike its most alike face is, at or above the threshold."""
    threshold = req.get("UserMatchThreshold", SEARCH_THRESHOLD)
    matches: list[dict[str, Any]] = []
    for user in sorted(coll["users"]):
        faces = _user_faces(coll, user)
        if not faces:
            continue
        score = max(similarity(a, f["_aspect"]) for a in aspects for f in faces)
        if score >= threshold:
            matches.append({"Similarity": score, "User": {"UserId": user, "UserStatus": "ACTIVE"}})
    matches.sort(key=lambda m: -m["Similarity"])
    return matches[: req.get("MaxUsers", 500)]


def search_users(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    """By a FaceId or a UserId (exactly one)."""
    if ("FaceId" in req) == ("UserId" in req):
        raise invalid_parameter("Provide either FaceId or UserId.")
    out: dict[str, Any] = {"FaceModelVersion": FACE_MODEL_VERSION}
    with call.collections.editing(req["CollectionId"]) as coll:
        if "FaceId" in req:
            face = coll["faces"].get(req["FaceId"])
            if face is None:
                raise invalid_parameter(f"FaceId {req['FaceId']} is not in collection {req['CollectionId']}.")
            aspects, out["SearchedFace"] = [face["_aspect"]], {"FaceId": req["FaceId"]}
        else:
            if req["UserId"] not in coll["users"]:
                raise _not_found(req["UserId"])
            aspects = [f["_aspect"] for f in _user_faces(coll, req["UserId"])]
            out["SearchedUser"] = {"UserId": req["UserId"]}
        out["UserMatches"] = _user_matches(coll, aspects, req) if aspects else []
    return out


def search_users_by_image(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    """With the largest face of the image; an image without a face: no match and no `SearchedFace`."""
    with call.collections.editing(req["CollectionId"]):
        pass  # ResourceNotFoundException before reading the image
    analysis = call.analyse(req["Image"])
    out: dict[str, Any] = {"UserMatches": [], "FaceModelVersion": FACE_MODEL_VERSION, "UnsearchedFaces": []}
    if not analysis.faces:
        return out
    face = _largest_face(analysis, "input")
    detail = r.face_detail(face, analysis, None)
    with call.collections.editing(req["CollectionId"]) as coll:
        out["UserMatches"] = _user_matches(coll, [face.box.aspect], req)
    out["SearchedFace"] = {"FaceDetail": detail}
    out["UnsearchedFaces"] = [
        {"FaceDetails": r.face_detail(other, analysis, None), "Reasons": ["FACE_NOT_LARGEST"]}
        for other in analysis.faces[1:]
    ]
    return out


#: The handlers of this module, by operation (the server dispatches on them with `operations.OPERATIONS`).
USER_OPERATIONS: dict[str, Handler] = {
    "CreateUser": create_user,
    "DeleteUser": delete_user,
    "ListUsers": list_users,
    "AssociateFaces": associate_faces,
    "DisassociateFaces": disassociate_faces,
    "SearchUsers": search_users,
    "SearchUsersByImage": search_users_by_image,
}
