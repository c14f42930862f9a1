"""Face comparison's pure parts: the request, the rows of each comparison, which failures mean "no face",
the reference crops, the settings digest over the reference set, and the flag's URLs."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from shape_strategies import operation_model, response_values

from batch.analyses import compare_faces
from batch.analyses.base import ImageInput
from batch.analyses.compare_faces import Settings
from batch.analyses.registry import REGISTRY, in_run_order, settings_digest, settled_digests
from batch.aws.rekognition import CallResult
from batch.cli.main import reference_urls
from batch.config.loader import config_digest, load_config
from batch.core.errors import ConfigError
from batch.core.geometry import ORIENTATIONS, BoxPlacement
from batch.core.incremental import CommittedState, settled_now
from batch.core.tables import rows_to_table
from batch.faces import references
from batch.faces.references import ReferenceFace, ReferenceImage, References

ANALYSIS = REGISTRY["compare_faces"]
TARGET = {"S3Object": {"Bucket": "photos", "Name": "a b/é.jpg"}}
ADA = ReferenceImage("refs", "people/ada.jpg", "e1")
GROUP = ReferenceImage("refs", "people/group.jpg", "e2")
COMMON = {"run_id": "r", "bucket": "photos", "key": "a b/é.jpg", "etag": "e"}


def face(image: ReferenceImage = ADA, index: int = 0, crop: bytes = b"\xff\xd8crop") -> ReferenceFace:
    return ReferenceFace(image, index, (0.1, 0.2, 0.3, 0.4), crop)


def resolved(
    *found: ReferenceFace, images: tuple[ReferenceImage, ...] | None = None, **options: Any
) -> Settings:
    chosen = Settings.from_mapping({"references": ["s3://refs/people/"], **options})
    photos = images if images is not None else tuple(dict.fromkeys(f.image for f in found))
    return dataclasses.replace(chosen, resolved=References(photos, found))


def image_input(earlier: Mapping[str, list[dict[str, Any]]] | None = None) -> ImageInput:
    return ImageInput(TARGET, bytes, lambda _: BoxPlacement(1000, 500), earlier or {})


class Calls:
    """A CompareFaces stand-in: answers each call from a list, records what it was asked."""

    def __init__(self, *answers: CallResult) -> None:
        self.answers = list(answers)
        self.requests: list[Mapping[str, Any]] = []

    def __call__(self, method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        assert (method, operation) == ("compare_faces", "CompareFaces")
        self.requests.append(request)
        return self.answers[min(len(self.requests), len(self.answers)) - 1]


def answer(*similarities: float, unmatched: int = 0) -> CallResult:
    box = {"Left": 0.5, "Top": 0.1, "Width": 0.1, "Height": 0.2}
    matches = [{"Similarity": s, "Face": {"BoundingBox": box, "Confidence": 99.0}} for s in similarities]
    return CallResult({"FaceMatches": matches, "UnmatchedFaces": [{"BoundingBox": box}] * unmatched}, 1)


NO_FACE = CallResult(None, 1, "InvalidParameterException", "Request has invalid parameters")


# --- the request --------------------------------------------------------------------------------------


def test_the_request_sends_the_reference_crop_as_source_and_the_image_as_target() -> None:
    chosen = resolved(face(), similarity_threshold=90, quality_filter="HIGH")
    request = compare_faces.compare_request(chosen.faces[0], TARGET, chosen)
    assert request == {
        "SourceImage": {"Bytes": b"\xff\xd8crop"},
        "TargetImage": TARGET,
        "SimilarityThreshold": 90.0,
        "QualityFilter": "HIGH",
    }
    # botocore's model accepts it; the defaults are AWS's own (80, NONE).
    from botocore.validate import validate_parameters

    validate_parameters(request, operation_model("CompareFaces").input_shape)
    assert (Settings().similarity_threshold, Settings().quality_filter) == (80.0, "NONE")


def test_unresolved_references_cannot_be_compared() -> None:
    with pytest.raises(ValueError, match="not resolved"):
        compare_faces.run(image_input(), Settings(references=("s3://refs/a.jpg",)), Calls())


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("s3://refs/people/ada.jpg", ("refs", "people/ada.jpg", False)),
        ("s3://refs/people/", ("refs", "people/", True)),
        ("s3://refs/", ("refs", "", True)),  # the whole bucket
    ],
)
def test_a_reference_is_a_key_or_a_prefix_ending_in_a_slash(
    url: str, location: tuple[str, str, bool]
) -> None:
    assert references.reference_location(url) == location


def test_the_flag_takes_urls_repeated_or_comma_separated_and_keys_with_commas_survive() -> None:
    assert reference_urls(None) is None
    assert reference_urls(["s3://r/a.jpg,s3://r/b.jpg", " s3://r/people/", "s3://r/c, d.jpg"]) == [
        "s3://r/a.jpg",
        "s3://r/b.jpg",
        "s3://r/people/",
        "s3://r/c, d.jpg",
    ]
    assert reference_urls(["s3://r/a.jpg, s3://r/b.jpg"]) == ["s3://r/a.jpg", "s3://r/b.jpg"]


def test_compare_faces_without_references_is_a_config_error() -> None:
    run = {"run.input": "s3://photos/p/", "run.output": "out", "run.analyses": "compare_faces"}
    with pytest.raises(ConfigError, match=r"^analyses\.compare_faces\.references: required"):
        load_config(environ={}, overrides=run)
    config = load_config(
        environ={}, overrides={**run, "analyses.compare_faces.references": ["s3://refs/a.jpg"]}
    )
    assert config.analysis_settings["compare_faces"].references == ("s3://refs/a.jpg",)


# --- running the comparisons -------------------------------------------------------------------------


def test_every_reference_face_is_compared_and_its_rows_carry_the_reference() -> None:
    group = [face(GROUP, 0, b"g0"), face(GROUP, 1, b"g1")]
    calls = Calls(answer(99.0, unmatched=1), answer(unmatched=2), answer(85.0, 81.0))
    outcome = compare_faces.run(image_input(), resolved(face(), *group), calls)
    assert outcome.failed is None
    assert [r["SourceImage"]["Bytes"] for r in calls.requests] == [b"\xff\xd8crop", b"g0", b"g1"]
    compared = outcome.rows["face_comparisons"]
    assert [(r["reference_key"], r["reference_face_index"], r["similarity"]) for r in compared] == [
        ("people/ada.jpg", 0, 99.0),
        ("people/group.jpg", 1, 85.0),
        ("people/group.jpg", 1, 81.0),
    ]
    first = compared[0]
    assert (first["reference_bucket"], first["reference_etag"]) == ("refs", "e1")
    assert (first["reference_box_left"], first["reference_box_height"]) == (0.1, 0.4)
    assert (first["box_left_px"], first["box_top_px"], first["box_width_px"]) == (500, 50, 100)
    misses = outcome.rows["face_comparison_misses"]
    assert [(m["reference_face_index"], m["faces_compared"], m["faces_unmatched"]) for m in misses] == [
        (0, 2, 1),
        (0, 2, 2),
        (1, 2, 0),
    ]
    for table, rows in outcome.rows.items():
        rows_to_table([{**COMMON, **row} for row in rows], ANALYSIS.tables[table])


def test_an_image_without_a_face_is_zero_comparisons_and_no_error() -> None:
    calls = Calls(NO_FACE)
    outcome = compare_faces.run(image_input(), resolved(face(), face(GROUP)), calls)
    assert outcome.failed is None
    assert outcome.rows == {"face_comparisons": [], "face_comparison_misses": []}
    assert len(calls.requests) == 2  # one unbilled call per reference face: any of them may be at fault


def test_a_reference_face_at_fault_does_not_pass_the_image_off_as_faceless() -> None:
    """The first reference face is one CompareFaces finds no face in; the second finds the image's."""
    calls = Calls(NO_FACE, answer(90.0, unmatched=1))
    outcome = compare_faces.run(image_input(), resolved(face(), face(GROUP)), calls)
    assert len(calls.requests) == 2
    assert outcome.failed == ("CompareFaces", NO_FACE)  # the analysis's error, to be tried again
    assert [r["similarity"] for r in outcome.rows["face_comparisons"]] == [90.0]


def test_no_call_when_detect_faces_found_no_face_in_the_same_run() -> None:
    calls = Calls(answer(99.0))
    outcome = compare_faces.run(image_input({"faces": []}), resolved(face()), calls)
    assert (outcome.failed, calls.requests) == (None, [])
    compare_faces.run(image_input({"faces": [{"face_index": 0}]}), resolved(face()), calls)
    assert len(calls.requests) == 1
    assert in_run_order(["compare_faces", "labels", "faces"]) == ("labels", "faces", "compare_faces")


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ((answer(90.0), NO_FACE), "after an answer the image has faces: the reference face was filtered"),
        ((CallResult(None, 1, "InvalidParameterException", "no faces in the source image"),), "names it"),
        ((CallResult(None, 6, "ThrottlingException", "slow down"),), "any other error"),
    ],
)
def test_other_failures_stop_at_the_failed_call_and_keep_the_rows(
    answers: tuple[CallResult, ...], reason: str
) -> None:
    outcome = compare_faces.run(image_input(), resolved(face(), face(GROUP)), Calls(*answers))
    assert outcome.failed is not None, reason
    assert outcome.failed == ("CompareFaces", answers[-1])
    assert len(outcome.rows["face_comparison_misses"]) == len(answers) - 1


def test_after_a_failure_the_photos_whose_faces_were_all_compared_stay_settled() -> None:
    throttled = CallResult(None, 6, "ThrottlingException", "slow down")
    settings = resolved(face(), face(GROUP, 0, b"g0"), face(GROUP, 1, b"g1"))
    outcome = compare_faces.run(image_input(), settings, Calls(answer(90.0), answer(85.0), throttled))
    assert outcome.failed == ("CompareFaces", throttled)
    assert outcome.settled_parts == (0,)  # ADA's one face answered; GROUP's second did not
    outcome = compare_faces.run(image_input(), settings, Calls(throttled))
    assert outcome.settled_parts == ()
    # A reference face CompareFaces finds no face in, in an image with faces: its photo stays unsettled.
    outcome = compare_faces.run(image_input(), settings, Calls(NO_FACE, answer(85.0), answer(80.0)))
    assert outcome.failed == ("CompareFaces", NO_FACE)
    assert outcome.settled_parts == (1,)


def test_the_digests_an_image_settles_are_those_of_the_parts_it_ran_and_finished() -> None:
    assert settled_now("d", None) == ("d",)
    assert settled_now(("a", "b", "c"), None) == ("a", "b", "c")
    assert settled_now(("a", "b", "c"), (0, 2)) == ("a", "c")
    assert settled_now(("a", "b", "c"), (0, 2), (1,)) == ("c",)  # ran a and c; only c finished


def test_no_face_is_an_error_when_detect_faces_found_faces_in_the_image() -> None:
    outcome = compare_faces.run(image_input({"faces": [{"face_index": 0}]}), resolved(face()), Calls(NO_FACE))
    assert outcome.failed == ("CompareFaces", NO_FACE)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(response_values("CompareFaces"), min_size=1, max_size=3),
    st.sampled_from(ORIENTATIONS),
    st.sampled_from(["JPEG", "PNG"]),
)
def test_full_shape_responses_give_valid_rows_for_each_reference_face(
    responses: list[dict[str, Any]], orientation: int, image_format: str
) -> None:
    found = [face(ADA, i, bytes([i])) for i in range(len(responses))]
    calls = Calls(*(CallResult(r, 1) for r in responses))
    placement = BoxPlacement.for_response(
        image_format=image_format, stored_width=640, stored_height=480, exif_orientation=orientation,
        orientation_correction=None,
    )  # fmt: skip
    image = ImageInput(TARGET, bytes, lambda _: placement, {})
    outcome = compare_faces.run(image, resolved(*found), calls)
    assert outcome.failed is None
    per_face = [
        (f.face_index, len(r.get("FaceMatches") or [])) for f, r in zip(found, responses, strict=True)
    ]
    compared = outcome.rows["face_comparisons"]
    assert [r["reference_face_index"] for r in compared] == [i for i, n in per_face for _ in range(n)]
    misses = outcome.rows["face_comparison_misses"]
    assert [m["reference_face_index"] for m in misses] == [f.face_index for f in found]
    for miss, response in zip(misses, responses, strict=True):
        unmatched = len(response.get("UnmatchedFaces") or [])
        assert (miss["faces_compared"], miss["faces_unmatched"]) == (
            len(response.get("FaceMatches") or []) + unmatched,
            unmatched,
        )
    for table, rows in outcome.rows.items():
        rows_to_table([{**COMMON, **row} for row in rows], ANALYSIS.tables[table])


# --- the reference faces -----------------------------------------------------------------------------


def exif_photo(upright: Image.Image, orientation: int) -> bytes:
    stored = upright.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    stored.save(data, "JPEG", exif=exif, quality=95)
    return data.getvalue()


def test_each_face_of_a_reference_is_cut_out_upright_and_large_crops_are_scaled_down() -> None:
    upright = Image.new("RGB", (3000, 2000), (0, 0, 0))
    upright.paste((255, 0, 0), (100, 100, 400, 500))  # a small face, 300x400
    upright.paste((0, 0, 255), (1000, 200, 2500, 1900))  # a large one, 1500x1700
    data = exif_photo(upright, 6)
    detected = [
        {"face_index": 0, "box_left": 100 / 3000, "box_top": 0.05, "box_width": 0.1, "box_height": 0.2},
        {"face_index": 1, "box_left": 1 / 3, "box_top": 0.1, "box_width": 0.5, "box_height": 0.85},
        {"face_index": 2, "box_left": None, "box_top": None, "box_width": None, "box_height": None},
    ]
    small, large = references.faces_of(ADA, detected, data, 0.0)
    assert (small.image, small.face_index, large.face_index) == (ADA, 0, 1)
    assert small.box == (100 / 3000, 0.05, 0.1, 0.2)
    with Image.open(io.BytesIO(small.crop)) as crop:
        assert crop.size == (300, 400)  # upright: taller than wide, as the face is
        assert crop.convert("RGB").getpixel((150, 200))[0] > 200
    with Image.open(io.BytesIO(large.crop)) as crop:
        assert max(crop.size) == references.MAX_CROP_SIDE
        assert crop.height > crop.width
        assert crop.convert("RGB").getpixel((crop.width // 2, crop.height // 2))[2] > 200


# --- the digest: what makes a later run compare again ------------------------------------------------


def test_the_settings_digest_changes_with_the_reference_set_only() -> None:
    one = resolved(face())
    digest = settings_digest(ANALYSIS, one)
    # The same photos, detected again (new crops) or named by another URL: the same comparisons.
    again = dataclasses.replace(resolved(face(crop=b"other")), references=("s3://refs/people/ada.jpg",))
    assert settings_digest(ANALYSIS, again) == digest
    both = resolved(face(), face(GROUP))
    assert settings_digest(ANALYSIS, both) != digest  # a new reference
    assert settings_digest(ANALYSIS, resolved(face(GROUP), face())) == settings_digest(ANALYSIS, both)
    changed = resolved(face(ReferenceImage("refs", "people/ada.jpg", "e9")))
    assert settings_digest(ANALYSIS, changed) != digest  # a changed reference (new ETag)
    assert settings_digest(ANALYSIS, resolved(face(), similarity_threshold=90)) != digest
    # A dry run finds the photos but cuts no face out: its digest is the real run's.
    assert settings_digest(ANALYSIS, resolved(images=(ADA,))) == digest


def test_each_reference_photo_is_settled_on_its_own() -> None:
    """A new reference photo adds a part; the parts of the others keep their digests, so an image is
    compared only with the new one (and a changed option compares it with all again)."""
    one = settled_digests(ANALYSIS, resolved(face()))
    both = settled_digests(ANALYSIS, resolved(face(GROUP, 0, b"g0"), face(), face(GROUP, 1, b"g1")))
    assert isinstance(one, tuple)
    assert isinstance(both, tuple)
    assert len(one) == 1
    assert len(both) == 2
    assert one[0] in both
    assert not set(one) & set(settled_digests(ANALYSIS, resolved(face(), similarity_threshold=90)))
    group_only = ANALYSIS.only_parts(resolved(face(GROUP, 0, b"g0"), face(), face(GROUP, 1, b"g1")), (0,))
    assert [f.crop for f in group_only.faces] == [b"g0", b"g1"]
    assert group_only.resolved is not None
    assert group_only.resolved.images == (GROUP,)


def test_an_image_needs_only_the_reference_photos_it_was_not_compared_with() -> None:
    state = CommittedState()
    one = settled_digests(ANALYSIS, resolved(face()))
    both = settled_digests(ANALYSIS, resolved(face(), face(GROUP)))
    assert isinstance(one, tuple)
    assert isinstance(both, tuple)
    state.add("a.jpg", "e", [("compare_faces", d) for d in one])
    assert state.needed("a.jpg", "e", {"compare_faces": one}) == ()
    assert state.needed("a.jpg", "e", {"compare_faces": both}) == ("compare_faces",)
    assert state.missing_parts("a.jpg", "e", "compare_faces", both) == (
        both.index(next(d for d in both if d not in one)),
    )
    assert state.missing_parts("b.jpg", "e", "compare_faces", both) == (0, 1)


def test_the_config_digest_holds_the_references_not_their_crops() -> None:
    run = {"run.input": "s3://photos/p/", "run.output": "out", "run.analyses": "compare_faces",
           "analyses.compare_faces.references": ["s3://refs/people/"]}  # fmt: skip
    config = load_config(environ={}, overrides=run)

    def with_references(chosen: Settings) -> str:
        settings = {**config.analysis_settings, "compare_faces": chosen}
        return config_digest(dataclasses.replace(config, analysis_settings=settings))

    assert with_references(resolved(face())) == with_references(resolved(face(crop=b"x")))
    assert with_references(resolved(face())) != with_references(resolved(face(), face(GROUP)))


def test_the_dry_run_counts_one_call_per_reference_photo_at_least() -> None:
    assert ANALYSIS.planned_calls(resolved(face(), face(index=1), face(GROUP))) == 2
    assert ANALYSIS.planned_calls(resolved(images=(ADA, GROUP))) == 2
    assert REGISTRY["labels"].planned_calls(REGISTRY["labels"].default_settings()) == 1


def test_cut_out_faces_are_kept_per_photo_version_and_read_back_equal(tmp_path: Any) -> None:
    from batch.faces.references import FaceCache
    from batch.storage.commits import RunStore
    from batch.storage.sink import Destination

    cache = FaceCache(RunStore(Destination(str(tmp_path))))
    found = (face(ADA, 0, b"\xff\xd8one"), face(ADA, 2, b"\xff\xd8two"))
    assert cache.get(ADA, 0.25) is None
    cache.put(ADA, 0.25, found)
    assert cache.get(ADA, 0.25) == found
    changed = dataclasses.replace(ADA, etag="e2")
    assert cache.get(changed, 0.25) is None  # a new version of the photo is detected again
    assert cache.get(ADA, 0.5) is None  # so is the same photo cut with another margin
