"""Issue 19: a JPEG whose Exif block is garbage but whose pixels decode is sent; Rekognition decides.

The CLI runs as a subprocess on the local stack. The endpoint decodes the image as Rekognition does
(Pillow, `ImageOps.exif_transpose`), so it finds the face; the job must send it, with orientation 1 and
a note in the `images` row, instead of refusing it as a broken header.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image

from batch.query import views
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "exif-garbage"
KEY = "in/garbage-exif.jpg"


def with_garbage_exif(jpeg: bytes) -> bytes:
    payload = b"Exif\0\0" + b"\x13\x37" * 40  # no TIFF header: Pillow's Exif parser raises
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_a_jpeg_with_a_garbage_exif_block_is_analysed(local_stack: LocalStack, tmp_path: Path) -> None:
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(
        Bucket=BUCKET, Key=KEY, Body=with_garbage_exif(make_image(rects=(("face", (40, 30, 66, 88)),)))
    )
    before = len(local_stack.calls())
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/in/", "--output", str(tmp_path / "out"),
               "--analyses", "labels,faces", "--summary-json", str(tmp_path / "summary.json")]  # fmt: skip
    env = {**os.environ, **local_stack.env, "REKBATCH_DASK__N_WORKERS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["images"]["analysed"] == 1
    calls = local_stack.calls()[before:]
    assert sorted(c["operation"] for c in calls) == ["DetectFaces", "DetectLabels"]
    assert {c["outcome"] for c in calls} == {"ok"}
    sql = views.connect(str(tmp_path / "out"))
    image = sql.execute(
        "SELECT status, status_reason, exif_orientation, width, height FROM images"
    ).fetchall()
    ((status, reason, orientation, width, height),) = image
    assert (status, orientation, width, height) == ("analysed", 1, 320, 240)
    assert reason.startswith("unreadable Exif block, orientation 1 assumed")
    assert sql.execute(
        "SELECT box_left_px, box_top_px, box_width_px, box_height_px FROM faces"
    ).fetchall() == [(40, 30, 66, 88)]
    assert sql.execute("SELECT count(*) FROM errors").fetchone() == (0,)
