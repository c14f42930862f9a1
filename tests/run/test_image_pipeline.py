"""One image through the job, and one batch's files: stub S3 and Rekognition clients passed in, no server.

What a user checks in the tables: the image's `images` row (status, reason, upright size, analyses), its
result rows with the common columns, and one `errors` row per failure, never a crash for a bad image.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import random
import struct
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from batch.analyses.registry import REGISTRY, settled_digests
from batch.aws.rekognition import RateLimiter, RekognitionCaller
from batch.config.model import RekognitionConfig
from batch.core.calls import IN_FLIGHT, CallCounts
from batch.core.image_header import UNREADABLE_EXIF
from batch.core.image_record import ImageRecord
from batch.core.manifest import ImageOutcome
from batch.core.retry import RetryPolicy
from batch.core.selection import ListedObject
from batch.run.batch_task import (
    ImageJournal,
    _analyses_done,
    finish_batch,
    record_failed_batch,
    table_schemas,
)
from batch.run.context import BatchSpec, ImageToAnalyse, RunContext
from batch.run.image_pipeline import OBJECT_CHANGED, analyse_image
from batch.storage.commits import RunStore
from batch.storage.sink import Destination

MODIFIED = datetime(2026, 11, 25, tzinfo=UTC)
LABELS = {
    "Labels": [{"Name": "Cat", "Confidence": 99.0, "Instances": [], "Parents": []}],
    "OrientationCorrection": None,
}


def jpeg(size: tuple[int, int] = (320, 200), orientation: int | None = None) -> bytes:
    image = Image.new("RGB", size, (120, 110, 100))
    save: dict[str, Any] = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    return buffer.getvalue()


def client_error(code: str, operation: str = "DetectLabels", status: int = 400) -> ClientError:
    error = {"Error": {"Code": code, "Message": f"{code} said the stub"}}
    return ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class StubS3:
    """GetObject and HeadObject of the objects it holds, honouring IfMatch, Range and VersionId as S3
    does; on a `versioned` bucket a PUT keeps the older versions and GetObject answers a VersionId."""

    def __init__(self, objects: Mapping[str, tuple[bytes, str]], *, versioned: bool = False) -> None:
        self.versions = {key: [body_etag] for key, body_etag in objects.items()}
        self.versioned = versioned
        self.heads: list[str] = []

    def put(self, key: str, body: bytes, etag: str) -> None:
        kept = self.versions[key] if self.versioned else []
        self.versions[key] = [*kept, (body, etag)]

    def get_object(
        self, *, Bucket: str, Key: str, IfMatch: str, Range: str = "", VersionId: str = "", **_: Any
    ) -> dict[str, Any]:
        index = int(VersionId.removeprefix("v")) if VersionId else len(self.versions[Key]) - 1
        body, etag = self.versions[Key][index]
        if IfMatch != etag:
            raise client_error("PreconditionFailed", "GetObject", 412)
        if Range:
            start, end = (int(n) for n in Range.removeprefix("bytes=").split("-"))
            body = body[start : end + 1]
        return {"Body": io.BytesIO(body), **({"VersionId": f"v{index}"} if self.versioned else {})}

    def head_object(self, *, Bucket: str, Key: str, IfMatch: str) -> dict[str, Any]:
        self.heads.append(Key)
        if IfMatch != self.versions[Key][-1][1]:
            raise client_error("412", "HeadObject", 412)  # a HEAD answer has no body to name the code
        return {}


class StubRekognition:
    """Answers (or raises) per operation, and records every request; `during` runs at each call."""

    def __init__(self, during: Any = None, **answers: Any) -> None:
        self.answers = answers
        self.during = during
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(**request: Any) -> Any:
            self.requests.append((method, request))
            if self.during is not None:
                self.during()
            answer = self.answers[method]
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return call


def context(analyses: tuple[str, ...], destination: Destination | None = None) -> RunContext:
    settings = {name: REGISTRY[name].default_settings() for name in analyses}
    return RunContext(
        run_id="r1",
        attempt=1,
        dt="2026-11-25",
        bucket="photos",
        analyses=analyses,
        analysis_settings=settings,
        settings_digests={name: settled_digests(REGISTRY[name], settings[name]) for name in analyses},
        rekognition=RekognitionConfig(),
        destination=destination or Destination("/nonexistent"),
        compression="zstd",
        threads_per_process=4,
    )


def analyse(
    data: bytes,
    rekognition: StubRekognition,
    analyses: tuple[str, ...],
    *,
    stop: threading.Event | None = None,
    s3: StubS3 | None = None,
    bytes_mode: bool = False,
) -> Any:
    obj = ListedObject("p/a.jpg", '"e1"', len(data), MODIFIED)
    caller = RekognitionCaller(
        rekognition,
        RetryPolicy(max_attempts=2, backoff_base=0.001),
        RateLimiter(1000.0),
        CallCounts(),
        sleep=lambda _: None,
    )
    s3 = s3 or StubS3({obj.key: (data, obj.etag)})
    run = context(analyses)
    if bytes_mode:
        run = dataclasses.replace(run, rekognition=RekognitionConfig(image_source="bytes"))
    return analyse_image(obj, run, caller.call, s3, stop or threading.Event(), analyses=analyses)


def test_an_analysed_image_has_its_upright_size_rows_with_common_columns_and_no_error() -> None:
    rekognition = StubRekognition(detect_labels=LABELS, detect_text={"TextDetections": []})
    result = analyse(jpeg(orientation=6), rekognition, ("text", "labels"))
    row = result.image_row
    assert (row["status"], row["status_reason"]) == ("analysed", None)
    assert (row["stored_width"], row["stored_height"], row["width"], row["height"]) == (320, 200, 200, 320)
    assert row["exif_orientation"] == 6
    assert row["analyses"] == ["text", "labels"]  # in the run's order
    assert row["sent_as"] == "s3_object"
    (label,) = result.rows["labels"]
    assert (label["run_id"], label["bucket"], label["key"], label["etag"]) == (
        "r1",
        "photos",
        "p/a.jpg",
        '"e1"',
    )
    assert (label["name"], label["confidence"]) == ("Cat", 99.0)
    assert result.errors == []
    assert [method for method, _ in rekognition.requests] == ["detect_text", "detect_labels"]
    assert rekognition.requests[1][1]["Image"] == {"S3Object": {"Bucket": "photos", "Name": "p/a.jpg"}}


def test_an_image_rekognition_refuses_is_rejected_once_and_not_sent_again() -> None:
    rekognition = StubRekognition(
        detect_labels=client_error("InvalidImageFormatException"), detect_text={"TextDetections": []}
    )
    result = analyse(jpeg(), rekognition, ("labels", "text"))
    assert (result.image_row["status"], result.image_row["status_reason"]) == (
        "rejected",
        "InvalidImageFormatException",
    )
    assert [method for method, _ in rekognition.requests] == ["detect_labels"]
    (error,) = result.errors
    assert (error["analysis"], error["operation"], error["error_code"]) == (
        "labels",
        "DetectLabels",
        "InvalidImageFormatException",
    )
    assert (error["attempts"], error["retryable"], error["key"]) == (1, False, "p/a.jpg")
    assert result.fatal is None


def test_a_throttled_call_is_retried_and_only_its_analysis_fails() -> None:
    rekognition = StubRekognition(
        detect_labels=client_error("ThrottlingException"), detect_text={"TextDetections": []}
    )
    result = analyse(jpeg(), rekognition, ("labels", "text"))
    assert (result.image_row["status"], result.image_row["analyses"]) == ("failed", ["text"])
    (error,) = result.errors
    assert (error["error_code"], error["attempts"], error["retryable"]) == ("ThrottlingException", 2, True)


def test_access_denied_ends_the_run_and_stops_the_other_images() -> None:
    stop = threading.Event()
    rekognition = StubRekognition(detect_labels=client_error("AccessDeniedException"))
    result = analyse(jpeg(), rekognition, ("labels",), stop=stop)
    assert stop.is_set()
    assert result.fatal is not None
    assert result.fatal.startswith("DetectLabels: AccessDeniedException: ")
    later = analyse(jpeg(), StubRekognition(detect_labels=LABELS), ("labels",), stop=stop)
    assert (later.image_row["status"], later.image_row["status_reason"]) == ("failed", "run aborted")


def test_a_file_that_is_not_an_image_is_refused_before_any_call() -> None:
    rekognition = StubRekognition()
    result = analyse(b"not an image at all" * 10, rekognition, ("labels",))
    assert result.image_row["status"] == "rejected"
    assert rekognition.requests == []
    (error,) = result.errors
    assert (error["analysis"], error["operation"], error["attempts"]) == (None, None, 0)
    assert error["error_code"] == result.image_row["status_reason"]


def test_an_object_changed_since_the_listing_is_changed_and_never_sent() -> None:
    data = jpeg()
    rekognition = StubRekognition(detect_labels=LABELS)
    result = analyse(data, rekognition, ("labels",), s3=StubS3({"p/a.jpg": (data, '"e2"')}))  # rewritten
    assert (result.image_row["status"], result.image_row["status_reason"]) == ("changed", OBJECT_CHANGED)
    assert [(e["operation"], e["error_code"]) for e in result.errors] == [("GetObject", OBJECT_CHANGED)]
    assert rekognition.requests == []


def test_an_object_gone_or_unreadable_since_the_listing_fails_with_the_s3_error() -> None:
    class DeniedS3(StubS3):
        def get_object(self, **_: Any) -> dict[str, Any]:
            raise client_error("AccessDenied", "GetObject", 403)

    data = jpeg()
    result = analyse(data, StubRekognition(), ("labels",), s3=DeniedS3({"p/a.jpg": (data, '"e1"')}))
    assert (result.image_row["status"], result.image_row["status_reason"]) == (
        "failed",
        "S3 read failed: AccessDenied",
    )
    assert [(e["operation"], e["error_code"]) for e in result.errors] == [("GetObject", "AccessDenied")]


TEXT = {"TextDetections": [{"DetectedText": "HI", "Type": "LINE", "Id": 0, "Confidence": 99.0}]}


def test_an_image_rewritten_during_its_calls_is_changed_with_no_result_rows() -> None:
    """Issue 19: labels of the old picture, text of the new one, under the old ETag. Without versions
    one HeadObject after the image's calls finds the new ETag: nothing of the image is kept or settled."""
    data = jpeg()
    s3 = StubS3({"p/a.jpg": (data, '"e1"')})
    rekognition = StubRekognition(
        during=lambda: s3.put("p/a.jpg", jpeg(orientation=3), '"e2"'), detect_labels=LABELS, detect_text=TEXT
    )
    result = analyse(data, rekognition, ("labels", "text"), s3=s3)
    assert len(rekognition.requests) == 2  # both calls were made (and paid)
    row = result.image_row
    assert (row["status"], row["status_reason"], row["analyses"]) == ("changed", OBJECT_CHANGED, [])
    assert (row["sent_as"], row["stored_width"]) == ("s3_object", 320)
    assert (result.rows, result.settled_parts) == ({}, {})
    (error,) = result.errors
    assert (error["operation"], error["error_code"], error["etag"]) == ("HeadObject", OBJECT_CHANGED, '"e1"')
    assert s3.heads == ["p/a.jpg"]  # one confirmation per image, not one per call


def test_an_unchanged_object_is_confirmed_once_and_keeps_its_rows() -> None:
    data = jpeg()
    s3 = StubS3({"p/a.jpg": (data, '"e1"')})
    result = analyse(data, StubRekognition(detect_labels=LABELS, detect_text=TEXT), ("labels", "text"), s3=s3)
    assert (result.image_row["status"], len(result.rows["text"])) == ("analysed", 1)
    assert s3.heads == ["p/a.jpg"]


def test_a_confirmation_s3_cannot_give_fails_the_image_and_keeps_nothing() -> None:
    class DeniedHeadS3(StubS3):
        def head_object(self, **_: Any) -> dict[str, Any]:
            raise client_error("403", "HeadObject", 403)

    data = jpeg()
    s3 = DeniedHeadS3({"p/a.jpg": (data, '"e1"')})
    result = analyse(data, StubRekognition(detect_labels=LABELS), ("labels",), s3=s3)
    assert (result.image_row["status"], result.image_row["status_reason"]) == (
        "failed",
        "S3 read failed: 403",
    )
    assert result.rows == {}
    assert [(e["operation"], e["error_code"]) for e in result.errors] == [("HeadObject", "403")]


def test_on_a_versioned_bucket_every_call_reads_the_version_the_header_read() -> None:
    data = jpeg()
    s3 = StubS3({"p/a.jpg": (data, '"e1"')}, versioned=True)
    rekognition = StubRekognition(
        during=lambda: s3.put("p/a.jpg", jpeg(orientation=3), '"e2"'), detect_labels=LABELS, detect_text=TEXT
    )
    result = analyse(data, rekognition, ("labels", "text"), s3=s3)
    pinned = {"S3Object": {"Bucket": "photos", "Name": "p/a.jpg", "Version": "v0"}}
    assert [request["Image"] for _, request in rekognition.requests] == [pinned, pinned]
    assert (result.image_row["status"], len(result.rows["text"])) == ("analysed", 1)
    assert s3.heads == []  # the version pins every read: nothing to confirm


def test_bytes_are_the_listed_etags_and_need_no_confirmation() -> None:
    data = jpeg()
    s3 = StubS3({"p/a.jpg": (data, '"e1"')})
    rekognition = StubRekognition(during=lambda: s3.put("p/a.jpg", jpeg(), '"e2"'), detect_labels=LABELS)
    result = analyse(data, rekognition, ("labels",), s3=s3, bytes_mode=True)
    assert rekognition.requests[0][1]["Image"] == {"Bytes": data}
    assert (result.image_row["status"], result.image_row["sent_as"], s3.heads) == ("analysed", "bytes", [])


def test_an_unreadable_exif_block_is_sent_with_orientation_1_and_a_note() -> None:
    """Issue 19: a JPEG whose Exif block is garbage but whose pixels decode was refused as a broken
    header; Rekognition decides what it can read."""
    data = jpeg()
    payload = b"Exif\0\0" + b"\x13\x37" * 40
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    rekognition = StubRekognition(detect_labels=LABELS)
    row = analyse(data, rekognition, ("labels",)).image_row
    assert (row["status"], row["exif_orientation"], row["width"], row["height"]) == ("analysed", 1, 320, 200)
    assert row["status_reason"].startswith(UNREADABLE_EXIF)
    assert len(rekognition.requests) == 1


def spec(destination: Destination, keys: tuple[str, ...]) -> BatchSpec:
    images = tuple(ImageToAnalyse(ListedObject(key, f'"{key}"', 1000, MODIFIED), ("labels",)) for key in keys)
    return BatchSpec(context(("labels",), destination), 7, images, calls_in_flight=2)


def test_a_failed_task_records_every_image_failed_with_its_reason(tmp_path: Path) -> None:
    destination = Destination(str(tmp_path))
    record = record_failed_batch(spec(destination, ("a.jpg", "b.jpg")), RuntimeError("worker died"), None)
    assert [(i.key, i.status) for i in record.images] == [("a.jpg", "failed"), ("b.jpg", "failed")]
    images = pq.read_table(tmp_path / next(f.path for f in record.files if f.table == "images")).to_pylist()
    assert {row["status_reason"] for row in images} == {"task failed: RuntimeError"}
    errors = pq.read_table(tmp_path / next(f.path for f in record.files if f.table == "errors")).to_pylist()
    assert [(e["key"], e["error_code"], e["retryable"]) for e in errors] == [
        ("a.jpg", "RuntimeError", True),
        ("b.jpg", "RuntimeError", True),
    ]
    assert RunStore(destination).batches("r1") == [record]  # the batch is complete: a resume keeps it


def done_record(result: Any, **calls: Any) -> ImageRecord:
    """The done record of the image `analyse` analysed."""
    rows = {"images": [result.image_row], "errors": result.errors, **result.rows}
    return ImageRecord("p/a.jpg", '"e1"', 1, 7, rows=rows, **calls)


def test_a_batch_writes_a_file_per_table_its_images_fill_and_bills_their_calls(tmp_path: Path) -> None:
    destination = Destination(str(tmp_path))
    assert set(table_schemas(("labels",))) == {"images", "errors", *REGISTRY["labels"].tables}
    result = analyse(jpeg(), StubRekognition(detect_labels=LABELS), ("labels",))
    calls = {("DetectLabels", "ok"): 1, ("DetectLabels", IN_FLIGHT): 1}  # a try that died, then this one
    image = done_record(result, calls=calls, repeated={("DetectLabels", IN_FLIGHT): 1})
    record = finish_batch(context(("labels",), destination), 7, [image], None)
    assert (record.calls, record.repeated) == (calls, {("DetectLabels", IN_FLIGHT): 1})
    assert (record.batch, record.images) == (7, (ImageOutcome("p/a.jpg", '"e1"', "analysed"),))
    assert {f.table for f in record.files} == {"images", "labels"}  # no error: no errors file
    assert all(Path(tmp_path, f.path).exists() for f in record.files)


def test_a_record_read_back_writes_the_same_files_as_the_image_itself(tmp_path: Path) -> None:
    """What a resume folds, or a re-run task takes from a record, is the same data, byte for byte."""
    result = analyse(jpeg(orientation=6), StubRekognition(detect_labels=LABELS), ("labels",))
    result.image_row["analyses_done"] = [{"analysis": "labels", "settings_digest": "d1"}]
    image = done_record(result)
    read_back = ImageRecord.from_bytes(image.to_bytes())
    written = {}
    for name, record in (("direct", image), ("read-back", read_back)):
        destination = Destination(str(tmp_path / name))
        batch = finish_batch(context(("labels",), destination), 7, [record], None)
        written[name] = {f.path: (tmp_path / name / f.path).read_bytes() for f in batch.files}
    assert written["direct"] == written["read-back"]
    assert len(written["direct"]) == 2


class Died(BaseException):
    """The process died during the call (a SIGKILL): nothing after it runs."""


def test_a_new_try_takes_the_answers_of_one_that_died_and_calls_only_what_was_in_flight(
    tmp_path: Path,
) -> None:
    data, texts = jpeg(), {"TextDetections": [], "TextModelVersion": "3.0"}
    obj = ListedObject("p/a.jpg", '"e1"', len(data), MODIFIED)
    run = context(("labels", "text"), Destination(str(tmp_path)))
    store = RunStore(run.destination)

    def one_try(rekognition: StubRekognition) -> ImageRecord:
        caller = RekognitionCaller(rekognition, RetryPolicy(), RateLimiter(1000.0), CallCounts())
        earlier = store.image("r1", 1, obj.key, obj.etag)
        journal = ImageJournal(store, run, 0, obj, earlier=earlier, reused=())
        call = functools.partial(caller.call, journal=journal)
        s3 = StubS3({obj.key: (data, obj.etag)})
        return journal.done(analyse_image(obj, run, call, s3, threading.Event(), analyses=("labels", "text")))

    with pytest.raises(Died):
        one_try(StubRekognition(detect_labels=LABELS, detect_text=Died()))
    died = store.image("r1", 1, obj.key, obj.etag)
    assert died is not None
    assert not died.done
    assert died.calls == {("DetectLabels", "ok"): 1, ("DetectText", IN_FLIGHT): 1}

    again = StubRekognition(detect_labels=LABELS, detect_text=texts)
    record = one_try(again)
    assert [method for method, _ in again.requests] == ["detect_text"]  # labels: the answer it had
    in_flight = {("DetectText", IN_FLIGHT): 1}
    assert record.calls == {("DetectLabels", "ok"): 1, ("DetectText", "ok"): 1, **in_flight}
    assert record.repeated == in_flight
    assert store.image("r1", 1, obj.key, obj.etag) == record
    whole = analyse(data, StubRekognition(detect_labels=LABELS, detect_text=texts), ("labels", "text"))
    assert record.rows == {"images": [whole.image_row], "errors": whole.errors, **whole.rows}


@pytest.mark.parametrize("name", ["face_search", "compare_faces"])
def test_a_face_analysis_error_never_rejects_the_image(name: str) -> None:
    assert not REGISTRY[name].rejects_image
    assert all(REGISTRY[n].rejects_image for n in ("labels", "faces", "text", "moderation", "celebrities"))


def test_a_face_crop_of_an_object_rewritten_meanwhile_makes_the_image_changed_not_its_task_fail() -> None:
    """face_search cuts faces out of the image's pixels, read (pinned) after DetectFaces answered: a
    rewrite in between used to raise out of the image and fail its whole batch."""
    data = jpeg()
    s3 = StubS3({"p/a.jpg": (data, '"e1"')})
    face = {"BoundingBox": {"Left": 0.1, "Top": 0.1, "Width": 0.4, "Height": 0.5}, "Confidence": 99.0}
    rekognition = StubRekognition(
        during=lambda: s3.put("p/a.jpg", jpeg(orientation=3), '"e2"'), detect_faces={"FaceDetails": [face]}
    )
    result = analyse(data, rekognition, ("faces", "face_search"), s3=s3)
    assert [method for method, _ in rekognition.requests] == ["detect_faces"]  # no search: no crop
    assert (result.image_row["status"], result.rows) == ("changed", {})
    assert [(e["operation"], e["error_code"]) for e in result.errors] == [("GetObject", OBJECT_CHANGED)]


PPE = {"ProtectiveEquipmentModelVersion": "1.0", "Persons": []}


def settled(result: Any, analyses: tuple[str, ...]) -> list[str]:
    """The analyses the image's `images` row settles (`analyses_done`)."""
    planned = ImageToAnalyse(ListedObject("p/a.jpg", '"e1"', 1, MODIFIED), analyses)
    return [done["analysis"] for done in _analyses_done(context(analyses), planned, result)]


@pytest.mark.parametrize(
    ("size", "bytes_mode", "code"),
    [((4097, 100), False, "ImageTooLargeException"), ((100, 4200), True, "ImageTooLargeException")],
)
def test_an_image_outside_ppe_limits_gets_an_error_row_and_no_call_and_the_others_go_on(
    size: tuple[int, int], bytes_mode: bool, code: str
) -> None:
    rekognition = StubRekognition(detect_labels=LABELS, detect_protective_equipment=PPE)
    result = analyse(jpeg(size), rekognition, ("ppe", "labels"), bytes_mode=bytes_mode)
    assert [method for method, _ in rekognition.requests] == ["detect_labels"]
    assert (result.image_row["status"], result.image_row["analyses"]) == ("analysed", ["labels"])
    (error,) = result.errors
    assert (error["analysis"], error["operation"], error["error_code"], error["attempts"]) == (
        "ppe",
        "DetectProtectiveEquipment",
        code,
        0,
    )
    assert "4,096 px a side" in error["message"]
    assert settled(result, ("ppe", "labels")) == ["ppe", "labels"]  # not tried again by the next run


def test_an_image_only_ppe_was_asked_for_and_that_it_refuses_is_rejected_without_a_call() -> None:
    rekognition = StubRekognition(detect_protective_equipment=PPE)
    result = analyse(jpeg((4100, 90)), rekognition, ("ppe",))
    assert rekognition.requests == []
    assert (result.image_row["status"], result.image_row["status_reason"]) == (
        "rejected",
        "ImageTooLargeException",
    )
    assert result.image_row["analyses"] == []
    assert settled(result, ("ppe",)) == ["ppe"]


def test_ppe_refuses_bytes_over_4_mb_but_not_an_s3_object_of_that_size() -> None:
    noise = Image.frombytes("RGB", (1400, 1100), random.Random(1).randbytes(1400 * 1100 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    data = buffer.getvalue()
    assert 4 * 1024 * 1024 < len(data) <= 5 * 1024 * 1024
    as_bytes = StubRekognition(detect_protective_equipment=PPE)
    result = analyse(data, as_bytes, ("ppe",), bytes_mode=True)
    assert as_bytes.requests == []
    (error,) = result.errors
    assert error["error_code"] == "ImageTooLargeException"
    assert (
        f"{len(data):,} bytes: over the 4,194,304 DetectProtectiveEquipment reads as bytes"
        in error["message"]
    )
    as_object = StubRekognition(detect_protective_equipment=PPE)
    result = analyse(data, as_object, ("ppe",))
    assert [method for method, _ in as_object.requests] == ["detect_protective_equipment"]
    assert (result.image_row["status"], result.errors) == ("analysed", [])
