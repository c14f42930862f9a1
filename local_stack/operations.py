"""One handler per Rekognition operation: (call, validated request) -> response dict.

The registry `OPERATIONS` is what the server dispatches on; adding an operation = one function + one line.
Handlers see images only through `Call.analyse`, which resolves Bytes/S3Object, records the source for the
call log and goes through the analysis cache.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from local_stack import responses as r
from local_stack.collections import (
    CollectionStore,
    collection_arn,
    public_face,
    similarity,
)
from local_stack.custom_labels import ModelStore, check_adapter, content_types
from local_stack.decoding import too_small
from local_stack.errors import ServiceError, invalid_parameter
from local_stack.images import ImageInput, S3ObjectCache, resolve_image
from local_stack.vision import CELEBRITY, LINE_TEXT, WORD_SPANS, Analysis, AnalysisCache, PixelBox, SeenObject

FACE_ID_NAMESPACE = uuid.UUID("0b5f1c8e-6d0c-4f55-9d1e-2a7d1c2b9e01")
MAX_DETECTED_FACES = 100
MAX_CELEBRITY_FACES = 64
MAX_WORDS = 100
PPE_MAX_BYTES = 4 * 1024 * 1024  # "The limit is 4 MB for the DetectProtectiveEquipment API."
PPE_MAX_SIDE_PX = 4096  # "The maximum image dimensions for DetectProtectiveEquipment is 4096 pixels"
MAX_PPE_PERSONS = 15  # "DetectProtectiveEquipment detects PPE worn by up to 15 persons"


@dataclass
class Call:
    """The state of one request: the services it may use and the first image it read (for the call log)."""

    analyses: AnalysisCache
    s3: S3ObjectCache | None
    collections: CollectionStore
    #: The Custom Labels models and moderation adapters (`local_stack.custom_labels.ModelStore`).
    models: ModelStore = field(default_factory=ModelStore)
    image: ImageInput | None = None
    digest: str | None = None
    #: The model or adapter the request names (ProjectVersionArn, ProjectVersion), for the call log.
    model: str | None = None

    def fetch(self, image: dict[str, Any]) -> ImageInput:
        resolved = resolve_image(image, self.s3)
        if self.image is None:
            self.image = resolved
            self.digest = resolved.digest
        return resolved

    def analyse(self, image: dict[str, Any]) -> Analysis:
        """The image's analysis, for every operation but DetectProtectiveEquipment: 80 px a side at least."""
        resolved = self.fetch(image)
        analysis = self.analyses.get(resolved.data, resolved.digest)
        refusal = too_small(analysis.width, analysis.height)
        if refusal is not None:
            raise refusal
        return analysis


Handler = Callable[[Call, dict[str, Any]], dict[str, Any]]

# ---- DetectLabels ---------------------------------------------------------------------------------------

#: kind -> (label name, categories, parents); only "Box" carries instances.
LABEL_CATALOGUE: dict[str, tuple[str, list[str], list[str]]] = {
    "box": ("Box", ["Packaging and Shipping"], []),
    "face": ("Face", ["Person Description"], ["Person", "Head"]),
    "text": ("Text", ["Text and Documents"], []),
}
#: Ancestors are labels too (as in Rekognition), with these categories.
PARENT_CATEGORIES = {"Person": ["Person Description"], "Head": ["Person Description"]}


def _label(name: str, confidence: float, categories: list[str], parents: list[str]) -> dict[str, Any]:
    return {
        "Name": name,
        "Confidence": confidence,
        "Instances": [],
        "Parents": [{"Name": p} for p in parents],
        "Aliases": [],
        "Categories": [{"Name": c} for c in categories],
    }


def _instance(obj: SeenObject, analysis: Analysis, with_colours: bool) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "BoundingBox": r.bounding_box(obj.box, analysis),
        "Confidence": r.confidence(obj),
    }
    if with_colours:  # instance colours only come with IMAGE_PROPERTIES, as in the service
        instance["DominantColors"] = [r.dominant_color(c) for c in obj.stats.colors[:3]]
    return instance


def _labels(analysis: Analysis, with_colours: bool) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for obj in analysis.objects:
        kind = "face" if obj.kind == "celebrity" else obj.kind
        if kind not in LABEL_CATALOGUE:
            continue
        name, categories, parents = LABEL_CATALOGUE[kind]
        conf = r.confidence(obj)
        label = found.setdefault(name, _label(name, conf, categories, parents))
        label["Confidence"] = max(label["Confidence"], conf)
        if kind == "box":
            label["Instances"].append(_instance(obj, analysis, with_colours))
        for parent in parents:
            ancestor = found.setdefault(parent, _label(parent, conf, PARENT_CATEGORIES[parent], []))
            ancestor["Confidence"] = max(ancestor["Confidence"], conf)
    return sorted(found.values(), key=lambda lab: (-lab["Confidence"], lab["Name"]))


def _label_filter(settings: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    include, exclude = settings.get("LabelInclusionFilters"), settings.get("LabelExclusionFilters") or []
    cat_in, cat_out = (
        settings.get("LabelCategoryInclusionFilters"),
        settings.get("LabelCategoryExclusionFilters") or [],
    )

    def keep(label: dict[str, Any]) -> bool:
        cats = {c["Name"] for c in label["Categories"]}
        return (
            (not include or label["Name"] in include)
            and label["Name"] not in exclude
            and (not cat_in or bool(cats & set(cat_in)))
            and not cats & set(cat_out)
        )

    return keep


def _image_properties(analysis: Analysis, max_colours: int) -> dict[str, Any]:
    def part(stats: Any) -> dict[str, Any]:
        return {
            "Quality": r.image_quality(stats),
            "DominantColors": [r.dominant_color(c) for c in stats.colors[:max_colours]],
        }

    whole = part(analysis.image)
    return {**whole, "Foreground": part(analysis.foreground), "Background": part(analysis.background)}


def detect_labels(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    analysis = call.analyse(req["Image"])
    features = set(req.get("Features") or ["GENERAL_LABELS"])
    settings = req.get("Settings", {})
    out: dict[str, Any] = {"Labels": [], "LabelModelVersion": "3.0"}
    if "GENERAL_LABELS" in features:
        keep = _label_filter(settings.get("GeneralLabels", {}))
        min_conf = req.get("MinConfidence", 55.0)
        labels = [
            lab
            for lab in _labels(analysis, "IMAGE_PROPERTIES" in features)
            if lab["Confidence"] >= min_conf and keep(lab)
        ]
        out["Labels"] = labels[: req.get("MaxLabels", 1000)]
    if "IMAGE_PROPERTIES" in features:
        max_colours = settings.get("ImageProperties", {}).get("MaxDominantColors", 10)
        out["ImageProperties"] = _image_properties(analysis, max_colours)
    return out


# ---- faces, text, moderation, celebrities, PPE ----------------------------------------------------------


def detect_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    analysis = call.analyse(req["Image"])
    faces = analysis.faces[:MAX_DETECTED_FACES]
    return {"FaceDetails": [r.face_detail(f, analysis, req.get("Attributes")) for f in _reading_order(faces)]}


def _reading_order(objs: list[SeenObject]) -> list[SeenObject]:
    return sorted(objs, key=lambda o: (o.box.top, o.box.left))


def word_boxes(line: PixelBox) -> list[PixelBox]:
    """The two word boxes of a text line: fixed spans of its width (`WORD_SPANS`), full height."""
    return [
        PixelBox(
            line.left + round(a * line.width), line.top, round((b - a) * line.width), line.height, line.fill
        )
        for a, b in WORD_SPANS
    ]


def _in_regions(box: dict[str, float], regions: list[dict[str, Any]]) -> bool:
    cx, cy = box["Left"] + box["Width"] / 2, box["Top"] + box["Height"] / 2
    for region in regions:
        if "BoundingBox" in region:
            b = region["BoundingBox"]
            left, top, right, bottom = (
                b.get("Left", 0),
                b.get("Top", 0),
                b.get("Left", 0) + b.get("Width", 0),
                b.get("Top", 0) + b.get("Height", 0),
            )
        else:
            xs = [p.get("X", 0) for p in region.get("Polygon", [])]
            ys = [p.get("Y", 0) for p in region.get("Polygon", [])]
            if not xs:
                continue
            left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
        if left <= cx <= right and top <= cy <= bottom:
            return True
    return False


def detect_text(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    analysis = call.analyse(req["Image"])
    filters = req.get("Filters", {})
    word_filter = filters.get("WordFilter", {})
    regions = filters.get("RegionsOfInterest") or []
    lines: list[tuple[SeenObject, list[tuple[str, dict[str, float]]]]] = []
    words: list[tuple[str, dict[str, float]]] = []
    for obj in _reading_order(analysis.of_kind("text")):
        conf = r.confidence(obj)
        kept = []
        for text, box in zip(LINE_TEXT, word_boxes(obj.box), strict=True):
            bbox = r.bounding_box(box, analysis)
            if (
                conf >= word_filter.get("MinConfidence", 0)
                and bbox["Height"] >= word_filter.get("MinBoundingBoxHeight", 0)
                and bbox["Width"] >= word_filter.get("MinBoundingBoxWidth", 0)
                and (not regions or _in_regions(bbox, regions))
            ):
                kept.append((text, bbox))
        if kept and len(words) + len(kept) <= MAX_WORDS:
            lines.append((obj, kept))
            words.extend(kept)
    detections: list[dict[str, Any]] = []
    next_word_id = len(lines)
    for line_id, (obj, kept) in enumerate(lines):
        bbox = r.bounding_box(obj.box, analysis)
        conf = r.confidence(obj)
        detections.append(
            {
                "DetectedText": " ".join(t for t, _ in kept),
                "Type": "LINE",
                "Id": line_id,
                "Confidence": conf,
                "Geometry": {"BoundingBox": bbox, "Polygon": r.polygon(bbox)},
            }
        )
        for text, wbox in kept:
            detections.append(
                {
                    "DetectedText": text,
                    "Type": "WORD",
                    "Id": next_word_id,
                    "ParentId": line_id,
                    "Confidence": conf,
                    "Geometry": {"BoundingBox": wbox, "Polygon": r.polygon(wbox)},
                }
            )
            next_word_id += 1
    # Rekognition lists every LINE first, then the WORDs.
    detections.sort(key=lambda d: (d["Type"] != "LINE", d["Id"]))
    return {"TextDetections": detections, "TextModelVersion": "3.0"}


#: What magenta means: a level-2 label and its level-1 parent (moderation taxonomy v7).
MODERATION_LABELS = (("Graphic Violence", "Violence", 2), ("Violence", "", 1))


def detect_moderation_labels(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    analysis = call.analyse(req["Image"])
    labels = []
    if analysis.moderated:
        conf = max(r.confidence(o) for o in analysis.of_kind("moderation")) - 1.0
        min_conf = req.get("MinConfidence", 50.0)
        labels = [
            {"Confidence": conf, "Name": name, "ParentName": parent, "TaxonomyLevel": level}
            for name, parent, level in MODERATION_LABELS
            if conf >= min_conf
        ]
    out = {"ModerationLabels": labels, "ModerationModelVersion": "7.0"}
    out["ContentTypes"] = content_types(analysis)
    if "ProjectVersion" in req:  # a custom adapter: answered as the base model, naming the adapter
        check_adapter(call, req["ProjectVersion"])
        out["ProjectVersion"] = req["ProjectVersion"]
    return out


def recognize_celebrities(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    analysis = call.analyse(req["Image"])
    faces = _reading_order(analysis.faces[:MAX_CELEBRITY_FACES])
    celebrities = [
        {**CELEBRITY, "Face": r.compared_face(f, analysis), "MatchConfidence": r.confidence(f)}
        for f in faces
        if f.kind == "celebrity"
    ]
    unknown = [r.compared_face(f, analysis) for f in faces if f.kind != "celebrity"]
    return {"CelebrityFaces": celebrities, "UnrecognizedFaces": unknown}


def _largest_face(analysis: Analysis, which: str) -> SeenObject:
    faces = analysis.faces
    if not faces:
        raise invalid_parameter(f"There are no faces in the {which} image.")
    return faces[0]


def compare_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    source = call.analyse(req["SourceImage"])
    target = call.analyse(req["TargetImage"])
    face = _largest_face(source, "source")
    if not target.faces:
        raise invalid_parameter("There are no faces in the target image.")
    threshold = req.get("SimilarityThreshold", 80.0)
    matches: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    for other in _reading_order(target.faces[:MAX_DETECTED_FACES]):
        score = similarity(face.box.aspect, other.box.aspect)
        if score >= threshold:
            matches.append({"Similarity": score, "Face": r.compared_face(other, target)})
        else:
            unmatched.append(r.compared_face(other, target))
    matches.sort(key=lambda m: -m["Similarity"])  # stable: ties stay in reading order
    return {
        "SourceImageFace": {
            "BoundingBox": r.bounding_box(face.box, source),
            "Confidence": r.confidence(face),
        },
        "FaceMatches": matches,
        "UnmatchedFaces": unmatched,
    }


#: PPE colours -> (EquipmentDetection Type, the body part it is on).
PPE_KINDS = {"head_cover": ("HEAD_COVER", "HEAD"), "face_cover": ("FACE_COVER", "FACE")}


def detect_protective_equipment(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    """Every face is a person with a FACE and a HEAD; each yellow (head cover) or cyan (face cover)
    rectangle is worn by the person of the nearest face, covering its body part."""
    image = call.fetch(req["Image"])
    if image.source == "bytes" and len(image.data) > PPE_MAX_BYTES:
        raise ServiceError("ImageTooLargeException", "Image size is too large.")
    analysis = call.analyses.get(image.data, image.digest)
    if max(analysis.width, analysis.height) > PPE_MAX_SIDE_PX:
        raise ServiceError("ImageTooLargeException", "Image size or resolution is too large.")
    faces = _reading_order(analysis.faces[:MAX_PPE_PERSONS])
    worn: dict[int, list[SeenObject]] = {i: [] for i in range(len(faces))}
    for item in analysis.of_kind(*PPE_KINDS) if faces else ():
        worn[min(range(len(faces)), key=lambda i: _distance(faces[i].box, item.box))].append(item)
    persons = [_person(i, face, worn[i], analysis) for i, face in enumerate(faces)]
    out: dict[str, Any] = {"ProtectiveEquipmentModelVersion": "1.0", "Persons": persons}
    summary_req = req.get("SummarizationAttributes")
    if summary_req:
        required = set(summary_req["RequiredEquipmentTypes"])
        wearing = {i: {PPE_KINDS[o.kind][0] for o in items} for i, items in worn.items()}
        out["Summary"] = {
            "PersonsWithRequiredEquipment": [i for i in worn if required <= wearing[i]],
            "PersonsWithoutRequiredEquipment": [i for i in worn if not required <= wearing[i]],
            "PersonsIndeterminate": [],
        }
    return out


def _distance(a: PixelBox, b: PixelBox) -> float:
    """Between the centres of two boxes, in pixels."""
    return math.hypot(
        a.left + a.width / 2 - b.left - b.width / 2, a.top + a.height / 2 - b.top - b.height / 2
    )


def _person(person_id: int, face: SeenObject, items: list[SeenObject], analysis: Analysis) -> dict[str, Any]:
    """One ProtectiveEquipmentPerson: its box spans the body below the face and the equipment it wears."""
    b = face.box
    boxes = [PixelBox(b.left - b.width // 2, b.top - b.height // 4, 2 * b.width, 3 * b.height)]
    boxes += [o.box for o in items]
    left, top = max(0, min(x.left for x in boxes)), max(0, min(x.top for x in boxes))
    right = min(analysis.width, max(x.left + x.width for x in boxes))
    bottom = min(analysis.height, max(x.top + x.height for x in boxes))
    parts = []
    for part in ("FACE", "HEAD"):
        detections = [
            {
                "BoundingBox": r.bounding_box(o.box, analysis),
                "Confidence": r.confidence(o),
                "Type": PPE_KINDS[o.kind][0],
                "CoversBodyPart": {"Confidence": r.confidence(o), "Value": True},
            }
            for o in items
            if PPE_KINDS[o.kind][1] == part
        ]
        parts.append({"Name": part, "Confidence": r.confidence(face), "EquipmentDetections": detections})
    return {
        "BodyParts": parts,
        "BoundingBox": r.bounding_box(PixelBox(left, top, right - left, bottom - top), analysis),
        "Confidence": r.confidence(face),
        "Id": person_id,
    }


# ---- collections ----------------------------------------------------------------------------------------


def create_collection(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    call.collections.create(req["CollectionId"])
    return {
        "StatusCode": 200,
        "CollectionArn": collection_arn(req["CollectionId"]),
        "FaceModelVersion": call.collections.model(req["CollectionId"]),
    }


def describe_collection(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    count, created = call.collections.describe(req["CollectionId"])
    return {
        "FaceCount": count,
        "FaceModelVersion": call.collections.model(req["CollectionId"]),
        "CollectionARN": collection_arn(req["CollectionId"]),
        "CreationTimestamp": created,
        "UserCount": call.collections.user_count(req["CollectionId"]),
    }


def _page(items: list[Any], req: dict[str, Any], default_size: int = 1000) -> tuple[list[Any], str | None]:
    token = req.get("NextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise ServiceError("InvalidPaginationTokenException", "Invalid pagination token.") from None
    size = req.get("MaxResults") or default_size
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def _with_token(body: dict[str, Any], token: str | None) -> dict[str, Any]:
    return {**body, "NextToken": token} if token else body


def list_collections(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    ids, token = _page(call.collections.ids(), req)
    models = [call.collections.model(collection) for collection in ids]
    return _with_token({"CollectionIds": ids, "FaceModelVersions": models}, token)


def delete_collection(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    call.collections.delete(req["CollectionId"])
    return {"StatusCode": 200}


def index_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    collection_id = req["CollectionId"]
    model = call.collections.model(collection_id)  # ResourceNotFoundException before touching the image
    analysis = call.analyse(req["Image"])
    external = req.get("ExternalImageId")
    faces = analysis.faces[:MAX_DETECTED_FACES]  # largest first: the ones MaxFaces keeps
    limit = req.get("MaxFaces", MAX_DETECTED_FACES)
    image_id = str(uuid.uuid5(FACE_ID_NAMESPACE, call.digest or ""))
    records, unindexed, stored = [], [], []
    for rank, obj in enumerate(faces):
        detail = r.face_detail(obj, analysis, req.get("DetectionAttributes"))
        if rank >= limit:
            unindexed.append({"Reasons": ["EXCEEDS_MAX_FACES"], "FaceDetail": detail})
            continue
        # Same image, collection and external id -> same FaceId: Rekognition does not store duplicates.
        face_id = str(uuid.uuid5(FACE_ID_NAMESPACE, f"{collection_id}|{call.digest}|{external}|{rank}"))
        face = {
            "FaceId": face_id,
            "BoundingBox": detail["BoundingBox"],
            "ImageId": image_id,
            "Confidence": detail["Confidence"],
            "IndexFacesModelVersion": model,
        }
        if external:
            face["ExternalImageId"] = external
        stored.append({**face, "_aspect": obj.box.aspect})
        records.append({"Face": face, "FaceDetail": detail})
    call.collections.add_faces(collection_id, stored)
    return {"FaceRecords": records, "FaceModelVersion": model, "UnindexedFaces": unindexed}


def list_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    faces = call.collections.faces(req["CollectionId"])
    if req.get("FaceIds"):
        faces = [f for f in faces if f["FaceId"] in set(req["FaceIds"])]
    if req.get("UserId"):
        faces = [f for f in faces if f.get("UserId") == req["UserId"]]
    page, token = _page(faces, req)
    return _with_token(
        {
            "Faces": [public_face(f) for f in page],
            "FaceModelVersion": call.collections.model(req["CollectionId"]),
        },
        token,
    )


def delete_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    deleted, kept = call.collections.delete_faces(req["CollectionId"], req["FaceIds"])
    out: dict[str, Any] = {"UnsuccessfulFaceDeletions": kept}
    if deleted:  # the model gives DeletedFaces a minimum length of 1
        out["DeletedFaces"] = deleted
    return out


def _matches(
    faces: list[dict[str, Any]], aspect: float, req: dict[str, Any], skip: str | None = None
) -> list[dict[str, Any]]:
    threshold = req.get("FaceMatchThreshold", 80.0)
    found: list[dict[str, Any]] = [
        {"Similarity": similarity(aspect, f["_aspect"]), "Face": public_face(f)}
        for f in faces
        if f["FaceId"] != skip
    ]
    found = [m for m in found if m["Similarity"] >= threshold]
    found.sort(key=lambda m: -m["Similarity"])
    return found[: req.get("MaxFaces", 100)]


def search_faces(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    faces = call.collections.faces(req["CollectionId"])
    searched = next((f for f in faces if f["FaceId"] == req["FaceId"]), None)
    if searched is None:
        raise invalid_parameter(f"FaceId {req['FaceId']} is not in collection {req['CollectionId']}.")
    return {
        "SearchedFaceId": req["FaceId"],
        "FaceMatches": _matches(faces, searched["_aspect"], req, req["FaceId"]),
        "FaceModelVersion": call.collections.model(req["CollectionId"]),
    }


def search_faces_by_image(call: Call, req: dict[str, Any]) -> dict[str, Any]:
    faces = call.collections.faces(req["CollectionId"])
    analysis = call.analyse(req["Image"])
    face = _largest_face(analysis, "input")  # the service searches with the largest face only
    return {
        "SearchedFaceBoundingBox": r.bounding_box(face.box, analysis),
        "SearchedFaceConfidence": r.confidence(face),
        "FaceMatches": _matches(faces, face.box.aspect, req),
        "FaceModelVersion": call.collections.model(req["CollectionId"]),
    }


OPERATIONS: dict[str, Handler] = {
    "DetectLabels": detect_labels,
    "DetectFaces": detect_faces,
    "DetectText": detect_text,
    "DetectModerationLabels": detect_moderation_labels,
    "RecognizeCelebrities": recognize_celebrities,
    "CompareFaces": compare_faces,
    "DetectProtectiveEquipment": detect_protective_equipment,
    "CreateCollection": create_collection,
    "DescribeCollection": describe_collection,
    "ListCollections": list_collections,
    "DeleteCollection": delete_collection,
    "IndexFaces": index_faces,
    "ListFaces": list_faces,
    "DeleteFaces": delete_faces,
    "SearchFaces": search_faces,
    "SearchFacesByImage": search_faces_by_image,
}
