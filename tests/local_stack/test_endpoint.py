"""The local Rekognition endpoint through a stock boto3 client found via AWS_ENDPOINT_URL_REKOGNITION."""

from __future__ import annotations

import hashlib
import http.client
import json
import struct
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore_shapes import validate_response
from conftest import make_image

from local_stack import samples as sample_set
from local_stack.samples import GroundTruth, SampleTruth, TruthObject
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

BUCKET = "samples"
PREFIX = "incoming/"
TOLERANCE_PX = 2
GOOD = [s.name for s in sample_set.good_specs() if s.placement == "prefix"]
BAD = [truth.name for _, truth in sample_set.bad_samples()]


@pytest.fixture(scope="module")
def seeded(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> tuple[GroundTruth, Path]:
    workdir = tmp_path_factory.mktemp("seed")
    return seed_samples(local_stack.s3_client(), BUCKET, PREFIX, workdir), workdir


@pytest.fixture(scope="module")
def rek(local_stack: LocalStack) -> Iterator[Any]:
    """A stock client: the endpoint comes from the environment only, retries off."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in local_stack.env.items():
            mp.setenv(name, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("rekognition", config=Config(retries={"total_max_attempts": 1}))
        assert client.meta.endpoint_url == local_stack.rekognition_url
        yield client


def image_arg(seeded: tuple[GroundTruth, Path], name: str, source: str) -> dict[str, Any]:
    truth, workdir = seeded
    sample = truth.by_name(name)
    if source == "bytes":
        return {"Bytes": (workdir / name).read_bytes()}
    return {"S3Object": {"Bucket": BUCKET, "Name": sample.key}}


def call(client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
    """Call by operation name and validate the response against botocore's output shape."""
    response = getattr(client, _snake(operation))(**kwargs)
    validate_response(operation, response)
    return response


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def assert_boxes(found: list[dict[str, float]], expected: list[TruthObject], sample: SampleTruth) -> None:
    """Same number of boxes and each within TOLERANCE_PX of the truth, in the upright frame."""
    width, height = sample.upright_width, sample.upright_height
    assert width
    assert height
    got = sorted(
        (b["Left"] * width, b["Top"] * height, b["Width"] * width, b["Height"] * height) for b in found
    )
    want = sorted(o.box_px for o in expected)
    assert len(got) == len(want), f"{sample.name}: {len(got)} boxes, expected {len(want)}"
    for g, w in zip(got, want, strict=True):
        assert max(abs(a - b) for a, b in zip(g, w, strict=True)) <= TOLERANCE_PX, (
            f"{sample.name}: {g} vs {w}"
        )


# ---- boxes against the ground truth, every operation, both sources ---------------------------------------


@pytest.mark.parametrize("source", ["bytes", "s3"])
@pytest.mark.parametrize("name", GOOD)
def test_detections_match_ground_truth(
    rek: Any, seeded: tuple[GroundTruth, Path], name: str, source: str
) -> None:
    sample = seeded[0].by_name(name)
    image = image_arg(seeded, name, source)

    faces = call(rek, "DetectFaces", Image=image)
    assert_boxes([f["BoundingBox"] for f in faces["FaceDetails"]], sample.faces, sample)
    assert "OrientationCorrection" not in faces

    labels = call(rek, "DetectLabels", Image=image)
    instances = [
        i["BoundingBox"] for lab in labels["Labels"] if lab["Name"] == "Box" for i in lab["Instances"]
    ]
    assert_boxes(instances, sample.of_kind("box"), sample)
    assert ("Face" in {lab["Name"] for lab in labels["Labels"]}) == bool(sample.faces)

    text = call(rek, "DetectText", Image=image)
    lines = [d for d in text["TextDetections"] if d["Type"] == "LINE"]
    words = [d for d in text["TextDetections"] if d["Type"] == "WORD"]
    assert [d["DetectedText"] for d in lines] == sample.line_texts
    assert_boxes([d["Geometry"]["BoundingBox"] for d in lines], sample.of_kind("text"), sample)
    truth_words = [TruthObject("word", w.box_px, w.box) for o in sample.of_kind("text") for w in o.words]
    assert_boxes([d["Geometry"]["BoundingBox"] for d in words], truth_words, sample)
    assert sorted(d["DetectedText"] for d in words) == sorted(
        w.text for o in sample.of_kind("text") for w in o.words
    )
    assert {d["ParentId"] for d in words} <= {d["Id"] for d in lines}

    moderation = call(rek, "DetectModerationLabels", Image=image)
    assert bool(moderation["ModerationLabels"]) == sample.moderation
    assert all("TaxonomyLevel" in m for m in moderation["ModerationLabels"])

    celebs = call(rek, "RecognizeCelebrities", Image=image)
    assert [c["Name"] for c in celebs["CelebrityFaces"]] == sample.celebrities
    assert_boxes(
        [c["Face"]["BoundingBox"] for c in celebs["CelebrityFaces"]], sample.of_kind("celebrity"), sample
    )
    assert_boxes([f["BoundingBox"] for f in celebs["UnrecognizedFaces"]], sample.of_kind("face"), sample)

    ppe = call(rek, "DetectProtectiveEquipment", Image=image)
    assert len(ppe["Persons"]) == len(sample.faces)


def test_landmarks_sit_inside_the_upright_face(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    for orientation in (1, 6, 8):
        name = f"orientation/exif-{orientation}.jpg"
        face = call(rek, "DetectFaces", Image=image_arg(seeded, name, "s3"))["FaceDetails"][0]
        box, marks = face["BoundingBox"], {m["Type"]: m for m in face["Landmarks"]}
        assert {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"} <= set(marks)
        for m in marks.values():
            assert box["Left"] <= m["X"] <= box["Left"] + box["Width"]
            assert box["Top"] <= m["Y"] <= box["Top"] + box["Height"]
        # Upright frame: eyes above the nose above the mouth, left eye left of the right eye.
        assert marks["eyeLeft"]["Y"] < marks["nose"]["Y"] < marks["mouthLeft"]["Y"]
        assert marks["eyeLeft"]["X"] < marks["eyeRight"]["X"]


# ---- bad files and limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["bytes", "s3"])
@pytest.mark.parametrize("name", BAD)
def test_bad_files_raise_the_modelled_error(
    rek: Any, seeded: tuple[GroundTruth, Path], name: str, source: str
) -> None:
    sample = seeded[0].by_name(name)
    image = image_arg(seeded, name, source)
    code = sample.expected_error
    if source == "bytes" and sample.size_bytes == 0:
        code = "InvalidParameterException"  # the model's ImageBlob min length is 1; only S3 can hold 0 bytes
    expected = getattr(rek.exceptions, code)
    for operation in ("detect_labels", "detect_faces", "detect_text"):
        with pytest.raises(expected) as info:
            getattr(rek, operation)(Image=image)
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bytes_over_5_mib_are_too_large(rek: Any) -> None:
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_labels(Image={"Bytes": b"\xff\xd8\xff" + b"\0" * 5_242_880})


def test_s3_object_over_15_mb_is_too_large(rek: Any, local_stack: LocalStack) -> None:
    s3 = local_stack.s3_client()
    s3.put_object(
        Bucket=BUCKET, Key="big/huge.png", Body=b"\x89PNG\r\n\x1a\n" + b"\0" * (15 * 1024 * 1024 + 1)
    )
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_labels(Image={"S3Object": {"Bucket": BUCKET, "Name": "big/huge.png"}})


@pytest.mark.parametrize(("bucket", "key"), [(BUCKET, "incoming/missing.jpg"), ("no-such-bucket", "a.jpg")])
def test_missing_object_or_bucket(rek: Any, seeded: tuple[GroundTruth, Path], bucket: str, key: str) -> None:
    with pytest.raises(rek.exceptions.InvalidS3ObjectException):
        rek.detect_faces(Image={"S3Object": {"Bucket": bucket, "Name": key}})


def test_changed_and_deleted_objects_are_seen(
    rek: Any, local_stack: LocalStack, seeded: tuple[GroundTruth, Path]
) -> None:
    s3, key = local_stack.s3_client(), "mutable/face.jpg"
    image = {"S3Object": {"Bucket": BUCKET, "Name": key}}
    s3.put_object(Bucket=BUCKET, Key=key, Body=make_image(rects=(("face", (20, 20, 60, 80)),)))
    assert len(rek.detect_faces(Image=image)["FaceDetails"]) == 1
    assert len(rek.detect_faces(Image=image)["FaceDetails"]) == 1  # served from the revalidated cache
    s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=make_image(rects=(("face", (20, 20, 60, 80)), ("face", (150, 20, 60, 80)))),
    )
    assert len(rek.detect_faces(Image=image)["FaceDetails"]) == 2
    s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(rek.exceptions.InvalidS3ObjectException):
        rek.detect_faces(Image=image)


# ---- operation options -------------------------------------------------------------------------------------


def test_detect_labels_options(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    image = image_arg(seeded, "plain/street.jpg", "bytes")
    names = [lab["Name"] for lab in call(rek, "DetectLabels", Image=image)["Labels"]]
    assert {"Box", "Face", "Text", "Person"} <= set(names)
    assert call(rek, "DetectLabels", Image=image, MinConfidence=100)["Labels"] == []
    assert len(call(rek, "DetectLabels", Image=image, MaxLabels=1)["Labels"]) == 1
    only_box = call(
        rek, "DetectLabels", Image=image, Settings={"GeneralLabels": {"LabelInclusionFilters": ["Box"]}}
    )
    assert [lab["Name"] for lab in only_box["Labels"]] == ["Box"]
    no_box = call(
        rek, "DetectLabels", Image=image, Settings={"GeneralLabels": {"LabelExclusionFilters": ["Box"]}}
    )
    assert "Box" not in [lab["Name"] for lab in no_box["Labels"]]
    people = call(
        rek,
        "DetectLabels",
        Image=image,
        Settings={"GeneralLabels": {"LabelCategoryInclusionFilters": ["Person Description"]}},
    )
    assert {lab["Name"] for lab in people["Labels"]} == {"Face", "Person", "Head"}
    props = call(
        rek,
        "DetectLabels",
        Image=image,
        Features=["IMAGE_PROPERTIES"],
        Settings={"ImageProperties": {"MaxDominantColors": 3}},
    )
    assert props["Labels"] == []
    assert 0 < len(props["ImageProperties"]["DominantColors"]) <= 3
    assert 0 < props["ImageProperties"]["Quality"]["Brightness"] < 100
    both = call(rek, "DetectLabels", Image=image, Features=["GENERAL_LABELS", "IMAGE_PROPERTIES"])
    box = next(lab for lab in both["Labels"] if lab["Name"] == "Box")
    assert box["Instances"][0]["DominantColors"][0]["SimplifiedColor"] == "green"
    assert "DominantColors" not in call(rek, "DetectLabels", Image=image)["Labels"][0]["Instances"][0]


def test_detect_faces_attributes(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    image = image_arg(seeded, "group/team.jpg", "s3")
    default = call(rek, "DetectFaces", Image=image)["FaceDetails"]
    everything = call(rek, "DetectFaces", Image=image, Attributes=["ALL"])["FaceDetails"]
    assert len(default) == len(everything) == 5
    assert "AgeRange" not in default[0]
    assert {"Pose", "Quality", "Landmarks", "Confidence"} <= set(default[0])
    assert {"AgeRange", "Gender", "Emotions", "Smile", "EyesOpen", "FaceOccluded", "EyeDirection"} <= set(
        everything[0]
    )
    one = call(rek, "DetectFaces", Image=image, Attributes=["DEFAULT", "GENDER"])["FaceDetails"][0]
    assert "Gender" in one
    assert "AgeRange" not in one


def test_detect_text_filters(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    image = image_arg(seeded, "png/shapes.png", "bytes")
    words = [d for d in call(rek, "DetectText", Image=image)["TextDetections"] if d["Type"] == "WORD"]
    first = words[0]["Geometry"]["BoundingBox"]
    wide = call(rek, "DetectText", Image=image, Filters={"WordFilter": {"MinBoundingBoxWidth": 0.9}})
    assert wide["TextDetections"] == []
    left_only = call(
        rek,
        "DetectText",
        Image=image,
        Filters={
            "RegionsOfInterest": [
                {
                    "BoundingBox": {
                        "Left": first["Left"],
                        "Top": first["Top"],
                        "Width": first["Width"],
                        "Height": first["Height"],
                    }
                }
            ]
        },
    )
    assert [d["DetectedText"] for d in left_only["TextDetections"]] == ["LOCAL", "LOCAL"]


def test_moderation_min_confidence(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    image = image_arg(seeded, "png/flagged.png", "s3")
    labels = call(rek, "DetectModerationLabels", Image=image)["ModerationLabels"]
    assert {(m["Name"], m["ParentName"], m["TaxonomyLevel"]) for m in labels} == {
        ("Graphic Violence", "Violence", 2),
        ("Violence", "", 1),
    }
    assert call(rek, "DetectModerationLabels", Image=image, MinConfidence=100)["ModerationLabels"] == []


def test_compare_faces_matches_by_aspect_ratio(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    truth = seeded[0]
    team = truth.by_name("group/team.jpg")
    result = call(
        rek,
        "CompareFaces",
        SourceImage=image_arg(seeded, "orientation/exif-6.jpg", "s3"),
        TargetImage=image_arg(seeded, "group/team.jpg", "bytes"),
    )
    same = [f for f in team.faces if f.identity == "3:4"]
    assert_boxes([m["Face"]["BoundingBox"] for m in result["FaceMatches"]], same, team)
    assert_boxes(
        [f["BoundingBox"] for f in result["UnmatchedFaces"]], [f for f in team.faces if f not in same], team
    )
    source = truth.by_name("orientation/exif-6.jpg")
    assert_boxes([result["SourceImageFace"]["BoundingBox"]], source.faces, source)
    strict = call(
        rek,
        "CompareFaces",
        SourceImage=image_arg(seeded, "orientation/exif-6.jpg", "s3"),
        TargetImage=image_arg(seeded, "group/team.jpg", "s3"),
        SimilarityThreshold=100,
    )
    assert len(strict["FaceMatches"]) == len(same)  # identical aspect ratios give similarity 100
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.compare_faces(
            SourceImage=image_arg(seeded, "empty/nothing.jpg", "s3"),
            TargetImage=image_arg(seeded, "group/team.jpg", "s3"),
        )


def test_collections_lifecycle(rek: Any, seeded: tuple[GroundTruth, Path]) -> None:
    team = seeded[0].by_name("group/team.jpg")
    cid = "people-test"
    call(rek, "CreateCollection", CollectionId=cid)
    with pytest.raises(rek.exceptions.ResourceAlreadyExistsException):
        rek.create_collection(CollectionId=cid)
    assert cid in call(rek, "ListCollections")["CollectionIds"]
    indexed = call(
        rek,
        "IndexFaces",
        CollectionId=cid,
        Image=image_arg(seeded, team.name, "s3"),
        ExternalImageId="team",
        MaxFaces=4,
        DetectionAttributes=["ALL"],
    )
    assert len(indexed["FaceRecords"]) == 4
    assert [u["Reasons"] for u in indexed["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]]
    again = call(
        rek,
        "IndexFaces",
        CollectionId=cid,
        Image=image_arg(seeded, team.name, "bytes"),
        ExternalImageId="team",
        MaxFaces=4,
    )
    assert [r["Face"]["FaceId"] for r in again["FaceRecords"]] == [
        r["Face"]["FaceId"] for r in indexed["FaceRecords"]
    ]
    assert call(rek, "DescribeCollection", CollectionId=cid)["FaceCount"] == 4
    faces = call(rek, "ListFaces", CollectionId=cid, MaxResults=3)
    assert len(faces["Faces"]) == 3
    assert "NextToken" in faces
    rest = call(rek, "ListFaces", CollectionId=cid, MaxResults=3, NextToken=faces["NextToken"])
    assert len(rest["Faces"]) == 1
    assert "NextToken" not in rest

    by_image = call(
        rek, "SearchFacesByImage", CollectionId=cid, Image=image_arg(seeded, "orientation/exif-8.jpg", "s3")
    )
    expected_3x4 = {
        r["Face"]["FaceId"]
        for r in indexed["FaceRecords"]
        if abs(
            r["Face"]["BoundingBox"]["Width"]
            * team.upright_width
            / (r["Face"]["BoundingBox"]["Height"] * team.upright_height)
            - 0.75
        )
        < 0.05
    }
    assert {m["Face"]["FaceId"] for m in by_image["FaceMatches"]} == expected_3x4
    searched = next(iter(expected_3x4))
    by_id = call(rek, "SearchFaces", CollectionId=cid, FaceId=searched)
    assert {m["Face"]["FaceId"] for m in by_id["FaceMatches"]} == expected_3x4 - {searched}
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.search_faces_by_image(CollectionId=cid, Image=image_arg(seeded, "empty/nothing.jpg", "s3"))

    deleted = call(
        rek, "DeleteFaces", CollectionId=cid, FaceIds=[searched, "00000000-0000-0000-0000-000000000000"]
    )
    assert deleted["DeletedFaces"] == [searched]
    assert [u["Reasons"] for u in deleted["UnsuccessfulFaceDeletions"]] == [["FACE_NOT_FOUND"]]
    call(rek, "DeleteCollection", CollectionId=cid)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.describe_collection(CollectionId=cid)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.index_faces(CollectionId=cid, Image=image_arg(seeded, team.name, "bytes"))


# ---- validation and protocol ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "kwargs", "field"),
    [
        ("detect_labels", {"MinConfidence": 101}, "MinConfidence"),
        ("detect_labels", {"Settings": {"ImageProperties": {"MaxDominantColors": 21}}}, "MaxDominantColors"),
        ("detect_labels", {"Features": ["GENERAL_LABELS", "IMAGE_PROPERTIES", "GENERAL_LABELS"]}, "Features"),
        ("detect_faces", {"Attributes": ["EVERYTHING"]}, "Attributes[0]"),
        ("detect_text", {"Filters": {"WordFilter": {"MinBoundingBoxHeight": 1.5}}}, "MinBoundingBoxHeight"),
        ("compare_faces", {"SimilarityThreshold": 120}, "SimilarityThreshold"),
    ],
)
def test_parameters_are_validated_from_the_model(
    rek: Any, operation: str, kwargs: dict[str, Any], field: str
) -> None:
    image = {"Bytes": make_image(rects=(("face", (20, 20, 60, 80)),))}
    images = (
        {"SourceImage": image, "TargetImage": image} if operation == "compare_faces" else {"Image": image}
    )
    with pytest.raises(
        rek.exceptions.InvalidParameterException, match=field.replace("[", r"\[").replace("]", r"\]")
    ):
        getattr(rek, operation)(**images, **kwargs)


def test_collection_id_pattern_is_enforced(rek: Any) -> None:
    with pytest.raises(rek.exceptions.InvalidParameterException, match="CollectionId"):
        rek.create_collection(CollectionId="not allowed!")


def _post(url: str, target: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL from the fixture
        url,
        data=body,
        method="POST",
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_wire_protocol(local_stack: LocalStack) -> None:
    status, headers, body = _post(local_stack.rekognition_url + "/", "RekognitionService.NoSuchThing", b"{}")
    assert status == 400
    assert body["__type"] == "UnknownOperationException"
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
    status, headers, body = _post(
        local_stack.rekognition_url + "/", "RekognitionService.ListCollections", b"{}"
    )
    assert status == 200
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-RequestId"]
    assert "CollectionIds" in body
    with urllib.request.urlopen(local_stack.rekognition_url + "/_health", timeout=5) as response:  # noqa: S310
        assert response.status == 200


def test_same_image_same_answer_and_call_log(
    rek: Any, local_stack: LocalStack, seeded: tuple[GroundTruth, Path]
) -> None:
    name = "group/team.jpg"
    data = (seeded[1] / name).read_bytes()
    answers = [
        rek.detect_faces(Image=image_arg(seeded, name, src), Attributes=["ALL"])
        for src in ("bytes", "s3", "bytes")
    ]
    for a in answers:
        a.pop("ResponseMetadata")
    assert answers[0] == answers[1] == answers[2]
    digest = hashlib.sha256(data).hexdigest()
    records = [c for c in local_stack.calls() if c["digest"] == digest and c["operation"] == "DetectFaces"]
    assert {r["source"] for r in records} == {"bytes", "s3"}
    s3_record = next(r for r in records if r["source"] == "s3")
    assert s3_record["bucket"] == BUCKET
    assert s3_record["name"] == seeded[0].by_name(name).key
    assert s3_record["service"] == "rekognition"  # Service Quotas' calls: "service-quotas"
    assert set(s3_record) == {
        "ts",
        "service",
        "region",
        "operation",
        "source",
        "bucket",
        "name",
        "version",
        "digest",
        "model",
        "outcome",
        "status",
        "latency_ms",
    }
    assert (s3_record["outcome"], s3_record["version"], s3_record["model"]) == ("ok", None, None)
    assert s3_record["status"] == 200


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: a decompression bomb Pillow must refuse before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("side", [10_000, 30_000])  # a Pillow warning, and a Pillow error
def test_decompression_bombs_are_refused(rek: Any, side: int) -> None:
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_labels(Image={"Bytes": _png_header_only(side, side)})


def test_collections_persist_to_a_json_file(tmp_path: Path) -> None:
    from local_stack.collections import CollectionStore

    path = tmp_path / "collections.json"
    store = CollectionStore(path)
    store.create("kept")
    store.add_faces("kept", [{"FaceId": "f1", "_aspect": 0.75}])
    reopened = CollectionStore(path)
    assert reopened.ids() == ["kept"]
    assert reopened.faces("kept") == [{"FaceId": "f1", "_aspect": 0.75}]


def _signed(url: str, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
    """An S3 request signed as botocore signs it (moto refuses anonymous writes)."""
    request = AWSRequest(method=method, url=url + path, data=body, headers=headers)
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials("testing", "testing"), "s3", "us-east-1").add_auth(request)
    return request.prepare()


def test_s3_server_keeps_connections_alive(local_stack: LocalStack) -> None:
    """One connection serves a PUT with a body, GET, HEAD, a 304 and a 404 (moto's own server closes each)."""
    url = local_stack.s3_url
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=10)
    body = b"keep-alive payload"
    steps = [("PUT", "/keepalive", b"", {}, 200), ("PUT", "/keepalive/k", body, {}, 200)]
    steps += [("GET", "/keepalive/k", b"", {}, 200), ("HEAD", "/keepalive/k", b"", {}, 200)]
    etag = '"' + hashlib.md5(body).hexdigest() + '"'  # noqa: S324 - S3's ETag of a single-part upload
    steps += [("GET", "/keepalive/k", b"", {"If-None-Match": etag}, 304)]
    steps += [("GET", "/keepalive/missing", b"", {}, 404), ("GET", "/keepalive/k", b"", {}, 200)]
    sockets = set()
    try:
        for method, path, data, headers, status in steps:
            prepared = _signed(url, method, path, data, **headers)
            conn.request(method, path, body=data or None, headers=dict(prepared.headers))
            response = conn.getresponse()
            payload = response.read()
            assert response.status == status, (method, path, payload)
            assert not response.will_close, (method, path)
            if method == "GET" and status == 200:
                assert payload == body
            sockets.add(id(conn.sock))
    finally:
        conn.close()
    assert len(sockets) == 1


@pytest.mark.parametrize("source", ["bytes", "s3"])
def test_sequential_calls_add_no_latency(rek: Any, seeded: tuple[GroundTruth, Path], source: str) -> None:
    """One client thread, calls in sequence: each takes milliseconds, not a delayed-ACK stall (~40 ms).

    The fastest of 15 calls is judged: a stall delays every call, while a loaded machine delays only some."""
    image = image_arg(seeded, GOOD[0], source)
    rek.detect_labels(Image=image)  # warm: connection, analysis cache
    durations = []
    for _ in range(15):
        started = time.perf_counter()
        rek.detect_labels(Image=image)
        durations.append(time.perf_counter() - started)
    assert min(durations) < 0.025, durations


def test_an_s3_object_version_is_read_and_logged(rek: Any, local_stack: LocalStack) -> None:
    """`S3Object.Version` pins the read to that version, as Rekognition does, whatever the key holds now."""
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket="versions")
    s3.put_bucket_versioning(Bucket="versions", VersioningConfiguration={"Status": "Enabled"})
    box, face = (
        make_image(rects=(("box", (40, 40, 120, 100)),)),
        make_image(rects=(("face", (40, 30, 66, 88)),)),
    )
    first = s3.put_object(Bucket="versions", Key="k.jpg", Body=box)["VersionId"]
    s3.put_object(Bucket="versions", Key="k.jpg", Body=face)
    pinned = {"S3Object": {"Bucket": "versions", "Name": "k.jpg", "Version": first}}
    assert {label["Name"] for label in rek.detect_labels(Image=pinned)["Labels"]} == {"Box"}
    current = rek.detect_labels(Image={"S3Object": {"Bucket": "versions", "Name": "k.jpg"}})
    assert "Face" in {label["Name"] for label in current["Labels"]}
    logged = [(c["version"], c["digest"]) for c in local_stack.calls() if c["bucket"] == "versions"]
    assert logged == [(first, hashlib.sha256(box).hexdigest()), (None, hashlib.sha256(face).hexdigest())]
