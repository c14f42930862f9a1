"""PPE end to end: `rekbatch run --analyses ppe,faces` as a subprocess on the local stack, over persons
with head and face covers drawn in every Exif orientation and as a PNG, checked against the samples'
ground truth (`local_stack.samples.ppe_samples`).

The convention (docs/local-stack.md): every face (a red rectangle) is a person; a yellow rectangle is a
head cover, a cyan one a face cover, worn by the person of the nearest face. A user checks that every
person and every item of equipment has a row with its upright box, that the summary says who wears
what `[analyses.ppe] required_equipment_types` asks for, and that an image too wide for
DetectProtectiveEquipment (over 4,096 px) gets an `errors` row and no call, while `faces` analyses it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore_shapes import validate_response
from conftest import make_image

from batch.query import views
from local_stack.samples import SampleTruth, TruthObject, ppe_samples
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "site"
SAMPLES = {truth.name: (data, truth) for data, truth in ppe_samples()}
TOO_WIDE = "ppe/too-wide.jpg"
SMALL = "small/person-72x96.jpg"  # under Rekognition's 80 px, over DetectProtectiveEquipment's 64
TYPES = {"head_cover": ("HEAD_COVER", "HEAD"), "face_cover": ("FACE_COVER", "FACE")}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        for name, (data, _) in SAMPLES.items():
            s3.put_object(Bucket=BUCKET, Key=f"gate/{name}", Body=data)
        s3.put_object(Bucket=BUCKET, Key=f"wide/{TOO_WIDE}", Body=SAMPLES[TOO_WIDE][0])
        s3.put_object(Bucket=BUCKET, Key=SMALL, Body=make_image((72, 96), (("face", (16, 20, 40, 50)),)))
        yield local


def rekbatch(stack: LocalStack, out: Path, prefix: str, analyses: str, *more: str) -> None:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", str(out), "--analyses", analyses,
               *more]  # fmt: skip
    environment = {
        **os.environ,
        **stack.env,
        "REKBATCH_DASK__N_WORKERS": "1",
        "REKBATCH_ANALYSES__PPE__REQUIRED_EQUIPMENT_TYPES": '["HEAD_COVER", "FACE_COVER"]',
    }
    done = subprocess.run(
        command, env=environment, cwd=out.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def rows(out: Path, sql: str) -> list[dict[str, Any]]:
    with views.connect(str(out)) as db:
        result = db.sql(sql)
        return [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]


def ppe_calls(stack: LocalStack, since: int) -> Counter[str]:
    """DetectProtectiveEquipment calls by image key, since call `since` of the log."""
    return Counter(c["name"] for c in stack.calls()[since:] if c["operation"] == "DetectProtectiveEquipment")


def centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def wearer(sample: SampleTruth, item: TruthObject) -> TruthObject:
    """The drawn face nearest the drawn equipment: its person wears it (the convention)."""
    return min(sample.faces, key=lambda face: math.dist(centre(face.box_px), centre(item.box_px)))


def pixels(row: dict[str, Any]) -> tuple[int, int, int, int]:
    return row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"]


def same_box(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 2  # JPEG noise at the edges


def contains(outer: tuple[int, ...], inner: tuple[int, ...]) -> bool:
    return (
        outer[0] <= inner[0] + 2
        and outer[1] <= inner[1] + 2
        and inner[0] + inner[2] <= outer[0] + outer[2] + 2
        and inner[1] + inner[3] <= outer[1] + outer[3] + 2
    )


def check_image(sample: SampleTruth, persons: list[dict[str, Any]], equipment: list[dict[str, Any]]) -> None:
    """One row per drawn face and per drawn item, upright boxes, each item on its wearer's row."""
    assert len(persons) == len(sample.faces), sample.name
    by_id = {p["person_id"]: p for p in persons}
    items = sample.of_kind(*TYPES)
    assert len(equipment) == len(items), sample.name
    worn: dict[int, set[str]] = {p["person_id"]: set() for p in persons}
    for item in items:
        (row,) = [e for e in equipment if same_box(pixels(e), item.box_px)]  # upright, whatever the Exif
        assert (row["equipment_type"], row["body_part"]) == TYPES[item.kind]
        assert row["covers_body_part"] is True
        person = by_id[row["person_id"]]
        assert contains(pixels(person), wearer(sample, item).box_px), (sample.name, person)
        assert contains(pixels(person), item.box_px)
        worn[row["person_id"]].add(row["equipment_type"])
    for person in persons:
        assert {part["name"] for part in person["body_parts"]} == {"FACE", "HEAD"}
        assert person["equipment_count"] == len(worn[person["person_id"]])
        both = worn[person["person_id"]] == {"HEAD_COVER", "FACE_COVER"}
        assert person["summary"] == ("with_required" if both else "without_required"), (sample.name, person)


def test_a_probing_dry_run_prices_no_call_for_the_image_too_wide_for_ppe(
    stack: LocalStack, tmp_path: Path
) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    out.mkdir()
    before = len(stack.calls())
    rekbatch(stack, out, "gate/", "ppe,faces", "--dry-run", "--probe", "--summary-json", str(summary))
    assert stack.calls()[before:] == []
    planned = json.loads(summary.read_text())
    assert planned["estimated_cost_usd"] == pytest.approx((2 * len(SAMPLES) - 1) * 0.001)  # faces: all


def test_persons_and_equipment_have_upright_boxes_and_a_too_wide_image_no_call(
    stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = len(stack.calls())
    rekbatch(stack, out, "gate/", "ppe,faces")
    called = ppe_calls(stack, before)
    assert called == Counter({f"gate/{name}": 1 for name in SAMPLES if name != TOO_WIDE})
    persons = rows(out, "SELECT * FROM ppe_persons")
    equipment = rows(out, "SELECT * FROM ppe_equipment")
    oriented = [truth for _, truth in SAMPLES.values() if truth.exif_tag_present]
    assert {truth.exif_orientation for truth in oriented} == set(range(1, 9))
    for name, (_, sample) in SAMPLES.items():
        key = f"gate/{name}"
        if name != TOO_WIDE:
            check_image(
                sample, [p for p in persons if p["key"] == key], [e for e in equipment if e["key"] == key]
            )
    assert any(p["summary"] == "with_required" for p in persons)

    # The image too wide for PPE: an errors row and no call; `faces` analysed it all the same.
    (error,) = rows(out, "SELECT * FROM errors")
    assert (error["key"], error["analysis"], error["operation"]) == (
        f"gate/{TOO_WIDE}",
        "ppe",
        "DetectProtectiveEquipment",
    )
    assert (error["error_code"], error["attempts"]) == ("ImageTooLargeException", 0)
    (image,) = rows(out, f"SELECT * FROM images WHERE key = 'gate/{TOO_WIDE}'")
    assert (image["status"], list(image["analyses"])) == ("analysed", ["faces"])
    (face,) = rows(out, f"SELECT * FROM faces WHERE key = 'gate/{TOO_WIDE}'")
    assert same_box(pixels(face), SAMPLES[TOO_WIDE][1].faces[0].box_px)

    # Nothing changed: the next run calls nothing, the refused image included.
    before = len(stack.calls())
    rekbatch(stack, out, "gate/", "ppe,faces")
    assert stack.calls()[before:] == []


def test_an_image_only_ppe_is_asked_for_and_too_wide_for_it_is_rejected_without_a_call(
    stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = len(stack.calls())
    rekbatch(stack, out, "wide/", "ppe")
    assert stack.calls()[before:] == []
    (image,) = rows(out, "SELECT * FROM images")
    assert (image["status"], image["status_reason"]) == ("rejected", "ImageTooLargeException")
    (error,) = rows(out, "SELECT * FROM errors")
    assert (error["analysis"], error["attempts"]) == ("ppe", 0)


def test_the_endpoint_answers_in_the_model_s_shape_and_refuses_what_the_service_refuses(
    stack: LocalStack,
) -> None:
    with pytest.MonkeyPatch.context() as env:
        for name, value in stack.env.items():
            env.setenv(name, value)
        rek = boto3.client("rekognition")
    summary = {"MinConfidence": 80.0, "RequiredEquipmentTypes": ["HEAD_COVER"]}
    for name, (data, sample) in SAMPLES.items():
        image = {"S3Object": {"Bucket": BUCKET, "Name": f"gate/{name}"}}
        if name == TOO_WIDE:
            for sent in (image, {"Bytes": data}):
                with pytest.raises(rek.exceptions.ImageTooLargeException):
                    rek.detect_protective_equipment(Image=sent)
            continue
        answer = rek.detect_protective_equipment(Image=image, SummarizationAttributes=summary)
        validate_response("DetectProtectiveEquipment", answer)
        assert len(answer["Persons"]) == len(sample.faces)
        helmeted = {wearer(sample, item).box_px for item in sample.of_kind("head_cover")}
        assert len(answer["Summary"]["PersonsWithRequiredEquipment"]) == len(helmeted)
        assert len(answer["Summary"]["PersonsWithoutRequiredEquipment"]) == len(sample.faces) - len(helmeted)


def test_an_image_of_72_px_a_side_is_analysed_by_ppe_and_refused_by_the_others_without_a_call(
    stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = len(stack.calls())
    rekbatch(stack, out, "small/", "ppe,faces")
    assert [c["operation"] for c in stack.calls()[before:]] == ["DetectProtectiveEquipment"]
    (person,) = rows(out, "SELECT * FROM ppe_persons")
    assert contains(pixels(person), (16, 20, 40, 50))
    (image,) = rows(out, "SELECT * FROM images")
    assert (image["status"], list(image["analyses"])) == ("analysed", ["ppe"])
    assert sorted(done["analysis"] for done in image["analyses_done"]) == ["faces", "ppe"]
    (error,) = rows(out, "SELECT * FROM errors")
    assert (error["analysis"], error["error_code"], error["attempts"]) == (
        "faces",
        "InvalidParameterException",
        0,
    )

    before = len(stack.calls())
    rekbatch(stack, tmp_path / "faces-only", "small/", "faces")
    assert stack.calls()[before:] == []
    (image,) = rows(tmp_path / "faces-only", "SELECT * FROM images")
    assert (image["status"], image["status_reason"]) == ("rejected", "InvalidParameterException")
