"""The sample generator, checked without the endpoint's code and without Pillow's exif_transpose."""

from __future__ import annotations

import io
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from local_stack import samples as sample_set
from local_stack.samples import GroundTruth, Spec


def upright_by_exif_spec(stored: np.ndarray, orientation: int) -> np.ndarray:
    """Display the stored pixels as the Exif/TIFF spec describes each orientation (numpy only)."""
    return {
        1: lambda a: a,
        2: np.fliplr,
        3: lambda a: a[::-1, ::-1],
        4: np.flipud,
        5: lambda a: a.transpose(1, 0, 2),  # row 0 = visual left, column 0 = visual top
        6: lambda a: np.rot90(a, k=-1),  # rotate 90 clockwise to display
        7: lambda a: np.rot90(np.fliplr(a), k=-1),  # mirror, then 90 clockwise
        8: lambda a: np.rot90(a, k=1),  # rotate 90 counter-clockwise to display
    }[orientation](stored)


def spec_for(name: str) -> Spec:
    return next(s for s in sample_set.good_specs() if s.name == name)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_samples_show_the_upright_picture(
    sample_dir: Path, samples: GroundTruth, orientation: int
) -> None:
    truth = samples.by_name(f"orientation/exif-{orientation}.jpg")
    with Image.open(sample_dir / truth.name) as img:
        assert img.getexif().get(sample_set.EXIF_ORIENTATION_TAG) == orientation
        stored = np.asarray(img.convert("RGB"))
    assert (stored.shape[1], stored.shape[0]) == (truth.stored_width, truth.stored_height)
    assert truth.exif_tag_present
    assert truth.exif_orientation == orientation
    if orientation >= 5:
        assert (truth.stored_width, truth.stored_height) == (truth.upright_height, truth.upright_width)
    upright, _ = sample_set.render_upright(spec_for(truth.name))
    shown = upright_by_exif_spec(stored, orientation).astype(np.int16)
    assert shown.shape[:2] == (truth.upright_height, truth.upright_width)
    assert np.abs(shown - np.asarray(upright, dtype=np.int16)).mean() < 3  # JPEG noise only


def test_truth_boxes_are_where_the_pixels_are(sample_dir: Path, samples: GroundTruth) -> None:
    """Inside each truth box the pixels are its palette colour; outside every box, no palette colour."""
    for truth in samples.samples:
        if truth.expected_error or truth.exif_tag_present or truth.format != "PNG":
            continue  # PNG is lossless: exact checks
        with Image.open(sample_dir / truth.name) as img:
            pixels = np.asarray(img.convert("RGB"))
        palette_anywhere = np.zeros(pixels.shape[:2], dtype=bool)
        for colour in sample_set.COLOURS.values():
            palette_anywhere |= np.all(pixels == colour, axis=-1)
        covered = np.zeros_like(palette_anywhere)
        for obj in truth.objects:
            left, top, w, h = obj.box_px
            assert np.all(pixels[top : top + h, left : left + w] == sample_set.COLOURS[obj.kind])
            covered[top : top + h, left : left + w] = True
        assert not np.any(palette_anywhere & ~covered), truth.name


def test_background_has_no_palette_colour_within_tolerance() -> None:
    img, objects = sample_set.render_upright(Spec("bg", (480, 320), (), seed=5))
    assert objects == []
    pixels = np.asarray(img, dtype=np.int16)
    for colour in sample_set.COLOURS.values():
        assert not np.any(np.all(np.abs(pixels - colour) <= 60, axis=-1))


def test_rectangles_keep_their_distance(samples: GroundTruth) -> None:
    for truth in samples.samples:
        boxes = [o.box_px for o in truth.objects]
        for i, (a, b, c, d) in enumerate(boxes):
            for e, f, g, h in boxes[i + 1 :]:
                apart = (
                    a + c + sample_set.GAP <= e
                    or e + g + sample_set.GAP <= a
                    or b + d + sample_set.GAP <= f
                    or f + h + sample_set.GAP <= b
                )
                assert apart, truth.name


def test_the_set_covers_what_the_job_must_handle(samples: GroundTruth, sample_dir: Path) -> None:
    names = {s.name for s in samples.samples}
    assert {s.exif_orientation for s in samples.samples if s.exif_tag_present} == set(range(1, 9))
    assert any(
        s.format == "JPEG" and not s.exif_tag_present and s.expected_error is None for s in samples.samples
    )
    assert any(s.format == "PNG" for s in samples.samples)
    assert unicodedata.normalize("NFC", "odd/café-nfc.jpg") in names
    assert unicodedata.normalize("NFD", "odd/café-nfd.jpg") in names
    assert any(c in n for n in names for c in " =+%")
    invalid, too_large = "InvalidImageFormatException", "ImageTooLargeException"
    # (what Rekognition says, the job's status, the job's error code, refused before any call)
    expected = {
        "bad/truncated.jpg": (invalid, "rejected", invalid, False),
        "bad/zero.jpg": (invalid, "skipped", "EmptyObject", True),
        "bad/text.jpg": (invalid, "rejected", invalid, True),
        "bad/tiny.jpg": ("InvalidParameterException", "rejected", "InvalidParameterException", True),
        "bad/wide.jpg": (too_large, "rejected", too_large, True),
        "bad/bomb.png": (too_large, "rejected", too_large, True),
        "bad/bomb.gif": (invalid, "rejected", "DecompressionBomb", True),
    }
    converted = ["other/webp-inside.jpg", "other/real.webp", "other/gif-inside.jpg", "other/turned.tiff",
                 "other/plain.bmp", "multi/animated.gif", "multi/pages.tif"]  # fmt: skip
    expected.update(dict.fromkeys(converted, (invalid, "analysed", None, False)))
    outcomes = {
        s.name: (s.expected_error, s.job_status, s.job_error, s.refused_from_header) for s in samples.bad()
    }
    assert outcomes == expected
    assert {s.name for s in samples.samples if s.converted} == set(converted)
    assert all(s.objects for s in samples.samples if s.converted)
    assert {s.format for s in samples.samples} >= {"JPEG", "PNG", "MPO", "WEBP", "GIF", "TIFF", "BMP"}
    team = samples.by_name("group/team.jpg")
    assert {f.identity for f in team.faces} == {"3:4", "1:1"}
    assert team.celebrities == ["Ada Lovelace"]
    assert samples.by_name("empty/nothing.jpg").objects == ()
    assert sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file()) < 3_000_000
    assert all(s.size_bytes < 1_000_000 for s in samples.samples)
    assert all(320 <= max(s.upright_width or 0, s.upright_height or 0) <= 640 for s in samples.good())


def test_generation_is_deterministic_and_round_trips(
    tmp_path: Path, samples: GroundTruth, sample_dir: Path
) -> None:
    again = sample_set.generate(tmp_path)
    assert again == samples
    for truth in samples.samples:
        assert (tmp_path / truth.name).read_bytes() == (sample_dir / truth.name).read_bytes()


def test_placement_puts_some_objects_outside_the_prefix(samples: GroundTruth) -> None:
    placed = samples.placed("bkt", "in/coming/")
    keys = {s.placement: s.key for s in placed.samples}
    assert keys["outside"].startswith("outside/")
    assert keys["archive"].startswith("in/coming-archive/")
    assert all(s.key.startswith("in/coming/") for s in placed.in_prefix())
    assert placed.outside_prefix()
    assert all(not s.key.startswith("in/coming/") for s in placed.outside_prefix())


def test_ground_truth_json_carries_the_derived_fields(sample_dir: Path, samples: GroundTruth) -> None:
    raw = json.loads((sample_dir / "ground_truth.json").read_text(encoding="utf-8"))
    team = next(s for s in raw["samples"] if s["name"] == "group/team.jpg")
    assert team["celebrities"] == ["Ada Lovelace"]
    assert team["moderation"] is False
    flagged = next(s for s in raw["samples"] if s["name"] == "png/flagged.png")
    assert flagged["moderation"] is True
    assert GroundTruth.from_json(json.dumps(raw)) == samples


def shows(pixels: np.ndarray, obj: sample_set.TruthObject) -> bool:
    """Is the centre of the object's box its palette colour in these pixels?"""
    left, top, w, h = obj.box_px
    centre = pixels[top + h // 2, left + w // 2].astype(np.int16)
    return bool(np.abs(centre - sample_set.COLOURS[obj.kind]).max() < 40)


@pytest.mark.parametrize("name", ["multi/animated.gif", "multi/pages.tif", "multi/stereo.jpg"])
def test_multi_frame_samples_show_their_truth_in_the_first_frame_only(
    sample_dir: Path, samples: GroundTruth, name: str
) -> None:
    truth = samples.by_name(name)
    with Image.open(sample_dir / name) as img:
        assert img.n_frames == 2
        first = np.asarray(img.convert("RGB"))
        img.seek(1)  # our own file: safe to seek
        second = np.asarray(img.convert("RGB"))
    assert all(shows(first, obj) for obj in truth.objects)
    assert not all(shows(second, obj) for obj in truth.objects)


def test_the_oversized_sample_is_over_15_mb_with_a_readable_header() -> None:
    ((data, truth),) = sample_set.oversized_samples()
    assert len(data) == truth.size_bytes > 15 * 1024 * 1024
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (truth.stored_width, truth.stored_height)
    assert (truth.job_status, truth.job_error, truth.refused_from_header) == (
        "rejected", "ImageTooLargeException", True
    )  # fmt: skip
