"""batch.analyses: requests pass botocore's validation, settings are checked, and flattening works on
botocore's example responses and on full-shape responses drawn from the output shapes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import botocore.loaders
import pytest
from botocore import xform_name
from botocore.validate import validate_parameters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shape_strategies import operation_model, rekognition_model, response_values

from batch.analyses import celebrities, compare_faces, faces, index_faces, labels, ppe
from batch.analyses.base import Analysis
from batch.analyses.registry import REGISTRY, all_tables, select, settings_digest
from batch.core.errors import ConfigError
from batch.core.geometry import ORIENTATIONS, BoxPlacement
from batch.core.tables import JOB_TABLES, rows_to_table
from batch.faces import references

IMAGES: list[dict[str, Any]] = [
    {"S3Object": {"Bucket": "my-bucket", "Name": "photos/a.jpg"}},
    {"S3Object": {"Bucket": "my-bucket", "Name": "photos/a.jpg", "Version": "3"}},
    {"Bytes": b"\xff\xd8\xff\xe0"},
]
ANALYSES = list(REGISTRY.values())


def by_name(analysis: Analysis) -> str:
    return analysis.name


def examples(operation: str) -> list[dict[str, Any]]:
    return botocore.loaders.Loader().load_service_model("rekognition", "examples-1")["examples"][operation]


def check_request(analysis: Analysis, request: dict[str, Any]) -> None:
    validate_parameters(request, operation_model(analysis.operation).input_shape)  # raises if invalid


# --- the registry against botocore's model --------------------------------------------------------


def test_the_registry_holds_the_ten_analyses() -> None:
    assert list(REGISTRY) == [
        "labels", "faces", "text", "moderation", "celebrities", "index_faces", "face_search",
        "compare_faces", "ppe", "custom_labels", "user_search",
    ]  # fmt: skip


@pytest.mark.parametrize("analysis", ANALYSES, ids=by_name)
def test_operation_client_method_and_orientation_field_match_the_model(analysis: Analysis) -> None:
    assert analysis.operation in rekognition_model().operation_names
    assert analysis.client_method == xform_name(analysis.operation)
    output = operation_model(analysis.operation).output_shape
    has_correction = "OrientationCorrection" in output.members
    assert (analysis.orientation_field == "OrientationCorrection") is has_correction
    assert (analysis.orientation_field is None) is not has_correction


def test_orientation_correction_is_read_from_the_response() -> None:
    assert REGISTRY["faces"].orientation_correction({"OrientationCorrection": "ROTATE_90"}) == "ROTATE_90"
    assert REGISTRY["faces"].orientation_correction({}) is None
    assert REGISTRY["text"].orientation_correction({"OrientationCorrection": "ROTATE_90"}) is None


def shape_bounds(shape_name: str) -> tuple[Any, Any]:
    shape = rekognition_model().shape_for(shape_name)
    return shape.metadata.get("min"), shape.metadata.get("max")


def test_hard_coded_limits_match_the_model() -> None:
    assert shape_bounds("Percent") == (0, 100)
    assert shape_bounds("UInteger") == (0, None)
    assert shape_bounds("GeneralLabelsFilterList")[1] == labels._FILTER_ITEMS
    assert shape_bounds("GeneralLabelsFilterValue")[1] == labels._FILTER_LENGTH
    assert (
        rekognition_model().shape_for("GeneralLabelsFilterValue").metadata["pattern"]
        == labels._FILTER_PATTERN
    )
    assert shape_bounds("DetectLabelsMaxDominantColors") == (0, labels._MAX_DOMINANT_COLORS)
    assert shape_bounds("BoundingBoxHeight") == (0, 1)
    assert shape_bounds("BoundingBoxWidth") == (0, 1)
    assert tuple(rekognition_model().shape_for("Attribute").enum) == faces.ATTRIBUTES
    assert tuple(rekognition_model().shape_for("ProtectiveEquipmentType").enum) == ppe.EQUIPMENT_TYPES


# --- settings and requests ------------------------------------------------------------------------

MODELS = [
    "arn:aws:rekognition:us-east-1:123456789012:project/widgets/version/widgets.2026-01-01T10.00.00/1767261600000",
    "arn:aws-cn:rekognition:cn-north-1:123456789012:project/b_2/version/v-1/1",
]
ADAPTER = "arn:aws:rekognition:us-east-1:123456789012:project/mod/version/adapter.1/1767261600001"

filter_lists = st.lists(st.from_regex(r"[A-Za-z0-9 ()-]{0,50}", fullmatch=True), max_size=5)
percents = st.floats(0, 100) | st.integers(0, 100)

SETTINGS_MAPPINGS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "labels": st.fixed_dictionaries(
        {},
        optional={
            "min_confidence": percents,
            "max_labels": st.integers(0, 10_000),
            "label_inclusion_filters": filter_lists,
            "label_exclusion_filters": filter_lists,
            "label_category_inclusion_filters": filter_lists,
            "label_category_exclusion_filters": filter_lists,
            "image_properties": st.booleans(),
            "max_dominant_colors": st.integers(0, 20),
        },
    ),
    "faces": st.fixed_dictionaries(
        {}, optional={"attributes": st.lists(st.sampled_from(faces.ATTRIBUTES), max_size=4)}
    ),
    "text": st.fixed_dictionaries(
        {},
        optional={
            "min_confidence": st.none() | percents,
            "min_bounding_box_height": st.none() | st.floats(0, 1),
            "min_bounding_box_width": st.none() | st.floats(0, 1),
        },
    ),
    "moderation": st.fixed_dictionaries(
        {}, optional={"min_confidence": percents, "project_version": st.sampled_from(["", ADAPTER])}
    ),
    "celebrities": st.just({}),
    "ppe": st.fixed_dictionaries(
        {},
        optional={
            "required_equipment_types": st.lists(st.sampled_from(ppe.EQUIPMENT_TYPES), max_size=3),
            "min_confidence": percents,
        },
    ),
    "index_faces": st.fixed_dictionaries(
        {"collection": st.from_regex(r"[a-zA-Z0-9_.\-]{1,255}", fullmatch=True)},
        optional={
            "max_faces": st.integers(1, 100),
            "quality_filter": st.sampled_from(index_faces.QUALITY_FILTERS),
            "detection_attributes": st.lists(st.sampled_from(faces.ATTRIBUTES), max_size=4),
        },
    ),
    "face_search": st.fixed_dictionaries(
        {"collection": st.from_regex(r"[a-zA-Z0-9_.\-]{1,255}", fullmatch=True)},
        optional={
            "face_match_threshold": percents,
            "max_matches": st.integers(1, 4096),
            "crop_margin": st.floats(0, 1),
        },
    ),
    "custom_labels": st.fixed_dictionaries(
        {"models": st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True)},
        optional={
            "min_confidence": st.none() | percents,
            "max_results": st.none() | st.integers(0, 1000),
            "start_models": st.booleans(),
            "inference_units": st.integers(1, 8),
        },
    ),
    "user_search": st.fixed_dictionaries(
        {
            "collection": st.from_regex(r"[a-zA-Z0-9_.\-]{1,255}", fullmatch=True),
            "users": st.just("s3://photos/people/"),
        },
        optional={
            "user_match_threshold": percents,
            "max_users": st.integers(1, 500),
            "association_threshold": percents,
            "crop_margin": st.floats(0, 1),
        },
    ),
    "compare_faces": st.fixed_dictionaries(
        {"references": st.lists(st.sampled_from(["s3://refs/ada.jpg", "s3://refs/people/"]), min_size=1)},
        optional={
            "similarity_threshold": percents,
            "quality_filter": st.sampled_from(index_faces.QUALITY_FILTERS),
            "crop_margin": st.floats(0, 1),
        },
    ),
}

#: Settings an analysis needs before it can be called at all (index_faces: a collection).
REQUIRED = {
    "index_faces": {"collection": "people"},
    "face_search": {"collection": "people"},
    "compare_faces": {"references": ["s3://refs/ada.jpg"]},
    "custom_labels": {"models": MODELS[:1]},
    "user_search": {"collection": "people", "users": "s3://refs/people/"},
}
REFERENCE = references.ReferenceImage("refs", "ada.jpg", "e1")


def ready(settings: Any) -> Any:
    """The settings as the driver hands them to the workers: compare_faces' references resolved."""
    if not isinstance(settings, compare_faces.Settings):
        return settings
    face = references.ReferenceFace(REFERENCE, 0, (0.1, 0.2, 0.3, 0.4), b"\xff\xd8\xff\xe0")
    return dataclasses.replace(settings, resolved=references.References((REFERENCE,), (face,)))


def usable_defaults(analysis: Analysis) -> Any:
    """The default settings plus what the analysis requires."""
    return ready(analysis.settings_type.from_mapping(REQUIRED.get(analysis.name, {})))


def test_every_analysis_has_a_settings_strategy() -> None:
    assert set(SETTINGS_MAPPINGS) == set(REGISTRY)


@pytest.mark.parametrize("analysis", ANALYSES, ids=by_name)
@pytest.mark.parametrize("image", IMAGES)
def test_default_request_passes_botocore_validation(analysis: Analysis, image: dict[str, Any]) -> None:
    request = analysis.request(image, "photos/a b/é=+.jpg", usable_defaults(analysis))
    check_request(analysis, request)
    assert request.get("Image", request.get("TargetImage")) == image


@pytest.mark.parametrize("analysis", ANALYSES, ids=by_name)
def test_any_accepted_settings_give_a_valid_request(analysis: Analysis) -> None:
    @settings(max_examples=100, deadline=None)
    @given(SETTINGS_MAPPINGS[analysis.name], st.sampled_from(IMAGES))
    def valid(mapping: dict[str, Any], image: dict[str, Any]) -> None:
        chosen = ready(analysis.settings_type.from_mapping(mapping, f"analyses.{analysis.name}"))
        check_request(analysis, analysis.request(image, "k/" + "é" * 511, chosen))

    valid()


def test_default_settings_are_those_documented() -> None:
    assert labels.Settings() == labels.Settings.from_mapping({})
    assert dataclasses.asdict(labels.Settings()) == {
        "min_confidence": 55.0,
        "max_labels": 1000,
        "label_inclusion_filters": (),
        "label_exclusion_filters": (),
        "label_category_inclusion_filters": (),
        "label_category_exclusion_filters": (),
        "image_properties": False,
        "max_dominant_colors": 10,
    }
    assert REGISTRY["faces"].default_settings().attributes == ("ALL",)
    assert REGISTRY["moderation"].default_settings().min_confidence == 50.0
    assert dataclasses.asdict(REGISTRY["text"].default_settings()) == dict.fromkeys(
        ("min_confidence", "min_bounding_box_height", "min_bounding_box_width")
    )


def test_labels_request_reproduces_the_botocore_example_input() -> None:
    example = examples("DetectLabels")[0]["input"]
    chosen = labels.Settings.from_mapping({"min_confidence": 70, "max_labels": 123})
    request = labels.build_request(example["Image"], chosen)
    assert {k: request[k] for k in example} == example
    assert request["Features"] == ["GENERAL_LABELS"]
    assert "Settings" not in request


def test_labels_request_with_filters_and_image_properties() -> None:
    chosen = labels.Settings.from_mapping(
        {"label_category_exclusion_filters": ["Weapons"], "image_properties": True, "max_dominant_colors": 3}
    )
    request = labels.build_request(IMAGES[0], chosen)
    assert request["Features"] == ["GENERAL_LABELS", "IMAGE_PROPERTIES"]
    assert request["Settings"] == {
        "GeneralLabels": {"LabelCategoryExclusionFilters": ["Weapons"]},
        "ImageProperties": {"MaxDominantColors": 3},
    }


def test_text_request_sends_only_the_filters_set() -> None:
    text = REGISTRY["text"]
    assert "Filters" not in text.build_request(IMAGES[0], text.default_settings())
    chosen = text.settings_type.from_mapping({"min_bounding_box_height": 0.05})
    assert text.build_request(IMAGES[0], chosen)["Filters"] == {"WordFilter": {"MinBoundingBoxHeight": 0.05}}


def test_faces_and_moderation_requests() -> None:
    assert faces.build_request(IMAGES[0], faces.Settings())["Attributes"] == ["ALL"]
    chosen = faces.Settings.from_mapping({"attributes": ["DEFAULT", "FACE_OCCLUDED"]})
    assert faces.build_request(IMAGES[0], chosen)["Attributes"] == ["DEFAULT", "FACE_OCCLUDED"]
    moderation = REGISTRY["moderation"]
    assert moderation.build_request(IMAGES[0], moderation.default_settings())["MinConfidence"] == 50.0


BAD_SETTINGS = [
    ("labels", "min_confidence", 100.5),
    ("labels", "min_confidence", -1),
    ("labels", "min_confidence", "high"),
    ("labels", "min_confidence", True),
    ("labels", "min_confidence", math.nan),
    ("labels", "max_labels", -1),
    ("labels", "max_labels", 2.5),
    ("labels", "label_inclusion_filters", "Person"),
    ("labels", "label_inclusion_filters", ["x"] * 101),
    ("labels", "label_exclusion_filters", ["x" * 51]),
    ("labels", "label_exclusion_filters", ["Person!"]),
    ("labels", "label_category_inclusion_filters", [1]),
    ("labels", "image_properties", 1),
    ("labels", "max_dominant_colors", 21),
    ("faces", "attributes", "ALL"),
    ("faces", "attributes", ["EVERYTHING"]),
    ("text", "min_confidence", 101),
    ("text", "min_bounding_box_height", 1.5),
    ("text", "min_bounding_box_width", -0.1),
    ("moderation", "min_confidence", 200),
    ("ppe", "required_equipment_types", "HEAD_COVER"),
    ("ppe", "required_equipment_types", ["HELMET"]),
    ("ppe", "min_confidence", 100.1),
    ("moderation", "project_version", "my-adapter"),
    ("moderation", "project_version", MODELS[0] + "/"),
    ("custom_labels", "models", MODELS[0]),
    ("custom_labels", "models", ["arn:aws:rekognition:us-east-1:123456789012:project/widgets/1"]),
    ("custom_labels", "models", [MODELS[0], MODELS[0]]),
    ("custom_labels", "min_confidence", 101),
    ("custom_labels", "max_results", -1),
    ("custom_labels", "inference_units", 0),
    ("custom_labels", "start_models", "yes"),
    ("compare_faces", "references", "s3://refs/ada.jpg"),
    ("compare_faces", "references", ["refs/ada.jpg"]),
    ("compare_faces", "references", ["s3://refs"]),
    ("compare_faces", "similarity_threshold", 101),
    ("compare_faces", "quality_filter", "BEST"),
    ("compare_faces", "crop_margin", 2),
    ("compare_faces", "resolved", {}),
]


@pytest.mark.parametrize(("name", "key", "value"), BAD_SETTINGS)
def test_bad_values_are_config_errors_naming_the_key(name: str, key: str, value: Any) -> None:
    where = f"analyses.{name}"
    with pytest.raises(ConfigError, match=rf"^{where}\.{key}: "):
        REGISTRY[name].settings_type.from_mapping({key: value}, where)


@pytest.mark.parametrize("analysis", ANALYSES, ids=by_name)
def test_unknown_keys_are_config_errors_naming_the_key(analysis: Analysis) -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.min_confidnce: unknown setting"):
        analysis.settings_type.from_mapping({"min_confidnce": 60}, "cfg")


def test_settings_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^analyses\.labels: must be a table"):
        labels.Settings.from_mapping(["min_confidence"], "analyses.labels")  # type: ignore[arg-type]


def test_limits_themselves_are_accepted() -> None:
    chosen = labels.Settings.from_mapping(
        {"min_confidence": 100, "label_inclusion_filters": ["x" * 50] * 100, "max_dominant_colors": 20}
    )
    assert chosen.min_confidence == 100.0
    check_request(REGISTRY["labels"], labels.build_request(IMAGES[0], chosen))


def test_settings_digest_is_stable_and_tells_settings_apart() -> None:
    analysis = REGISTRY["labels"]
    digest = settings_digest(analysis, labels.Settings())
    assert digest == settings_digest(analysis, labels.Settings.from_mapping({"min_confidence": 55}))
    assert digest != settings_digest(analysis, labels.Settings(min_confidence=56))
    assert len(digest) == 64
    with pytest.raises(TypeError):
        settings_digest(analysis, faces.Settings())


def test_select_keeps_order_drops_repeats_and_rejects_unknown_names() -> None:
    assert [a.name for a in select(["faces", "labels", "faces"])] == ["faces", "labels"]
    with pytest.raises(ConfigError, match=r"^analyses: unknown analysis 'label'"):
        select(["label"])


# --- flattening botocore's example responses ------------------------------------------------------


def table_rows(analysis: Analysis, response: Mapping[str, Any], placement: BoxPlacement) -> dict[str, list]:
    """flatten, then check every table validates against its schema with the common columns added."""
    rows = analysis.flatten(response, placement)
    assert set(rows) == set(analysis.tables)
    common = {"run_id": "r", "bucket": "b", "key": "k", "etag": "e"}
    for table, table_rows_ in rows.items():
        assert all(common.keys().isdisjoint(row) for row in table_rows_), (
            "flatten must not fill common columns"
        )
        rows_to_table([{**common, **row} for row in table_rows_], analysis.tables[table])
    return rows


def test_detect_labels_example() -> None:
    response = examples("DetectLabels")[0]["output"]
    placement = BoxPlacement(stored_width=1000, stored_height=600)
    rows = table_rows(REGISTRY["labels"], response, placement)
    assert [(r["name"], r["confidence"]) for r in rows["labels"]] == [
        ("People", 99.25072479248047),
        ("Person", 99.25074005126953),
    ]
    assert [r["instance_count"] for r in rows["labels"]] == [0, 0]
    assert rows["labels"][0]["parents"] is None
    assert rows["label_instances"] == []
    assert rows["image_properties"] == []


def faces_example() -> dict[str, Any]:
    return examples("DetectFaces")[0]["output"]


def test_detect_faces_example_exif_less_jpeg() -> None:
    response = faces_example()
    assert response["OrientationCorrection"] == "ROTATE_0"
    placement = BoxPlacement.for_response(
        image_format="JPEG",
        stored_width=1000,
        stored_height=600,
        exif_orientation=None,
        orientation_correction=REGISTRY["faces"].orientation_correction(response),
    )
    (face,) = table_rows(REGISTRY["faces"], response, placement)["faces"]
    assert face["face_index"] == 0
    assert face["confidence"] == 100
    # BoundingBox: Left 0.5556, Top 0.3367, Width 0.24, Height 0.18 of 1000 x 600.
    assert (face["box_left_px"], face["box_top_px"], face["box_width_px"], face["box_height_px"]) == (
        556,
        202,
        240,
        108,
    )
    assert (face["stored_box_left_px"], face["stored_box_top_px"]) == (556, 202)
    assert face["box_left"] == pytest.approx(0.5555555820465088)
    assert (face["pose_roll"], face["pose_yaw"], face["pose_pitch"]) == (
        0.9950747489929199,
        13.693790435791016,
        4.050806522369385,
    )
    assert (face["quality_brightness"], face["quality_sharpness"]) == (37.60169982910156, 80)
    assert face["smile"] is None
    assert face["emotions"] is None
    assert [m["type"] for m in face["landmarks"]] == [
        "eyeLeft",
        "eyeRight",
        "eyeRight",
        "mouthDown",
        "mouthUp",
    ]
    eye_left = face["landmarks"][0]
    assert (eye_left["x_px"], eye_left["y_px"]) == (639, 245)  # 0.63947 * 1000, 0.40820 * 600


def test_detect_faces_example_png_with_exif_6() -> None:
    """Same answer for a 1000 x 600 PNG whose eXIf says "rotate 90° clockwise": boxes are turned upright."""
    placement = BoxPlacement.for_response(
        image_format="PNG",
        stored_width=1000,
        stored_height=600,
        exif_orientation=6,
        orientation_correction=None,
    )
    (face,) = table_rows(REGISTRY["faces"], faces_example(), placement)["faces"]
    # Upright is 600 wide, 1000 high; left = 1 - (Top + Height), top = Left.
    assert face["box_left_px"] == round((1 - (0.33666667342185974 + 0.18000000715255737)) * 600)
    assert face["box_top_px"] == 556
    assert (face["box_width_px"], face["box_height_px"]) == (108, 240)
    assert (face["stored_box_left_px"], face["stored_box_top_px"]) == (556, 202)
    eye_left = face["landmarks"][0]
    assert (eye_left["x_px"], eye_left["y_px"]) == (round((1 - 0.40819624066352844) * 600), 639)
    assert (eye_left["stored_x_px"], eye_left["stored_y_px"]) == (639, 245)


# --- flattening hand-made responses of the newer members ------------------------------------------


def test_labels_with_instances_categories_and_image_properties() -> None:
    color = {
        "Red": 1,
        "Green": 2,
        "Blue": 3,
        "HexCode": "#010203",
        "CSSColor": "black",
        "SimplifiedColor": "black",
        "PixelPercent": 12.5,
    }
    response = {
        "Labels": [
            {
                "Name": "Car",
                "Confidence": 98.0,
                "Instances": [
                    {
                        "BoundingBox": {"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4},
                        "Confidence": 97.0,
                        "DominantColors": [color],
                    },
                    {
                        "BoundingBox": {"Left": 0.5, "Top": 0.5, "Width": 0.1, "Height": 0.1},
                        "Confidence": 90.0,
                    },
                ],
                "Parents": [{"Name": "Vehicle"}, {"Name": "Transportation"}],
                "Aliases": [{"Name": "Automobile"}],
                "Categories": [{"Name": "Vehicles and Automotive"}],
            }
        ],
        "LabelModelVersion": "3.0",
        "ImageProperties": {
            "Quality": {"Brightness": 80.0, "Sharpness": 90.0, "Contrast": 70.0},
            "DominantColors": [color],
            "Foreground": {"Quality": {"Brightness": 60.0}},
        },
    }
    rows = table_rows(REGISTRY["labels"], response, BoxPlacement(100, 200))
    (label,) = rows["labels"]
    assert label == {
        "name": "Car",
        "confidence": 98.0,
        "parents": ["Vehicle", "Transportation"],
        "aliases": ["Automobile"],
        "categories": ["Vehicles and Automotive"],
        "instance_count": 2,
        "model_version": "3.0",
    }
    first, second = rows["label_instances"]
    assert (first["name"], first["instance_index"], second["instance_index"]) == ("Car", 0, 1)
    assert (first["box_left_px"], first["box_top_px"], first["box_width_px"], first["box_height_px"]) == (
        10,
        40,
        30,
        80,
    )
    assert first["dominant_colors"][0]["css_color"] == "black"
    assert first["dominant_colors"][0]["pixel_percent"] == 12.5
    assert second["dominant_colors"] is None
    (properties,) = rows["image_properties"]
    assert (properties["brightness"], properties["contrast"], properties["foreground_brightness"]) == (
        80.0,
        70.0,
        60.0,
    )
    assert properties["background_brightness"] is None
    assert properties["dominant_colors"][0]["hex_code"] == "#010203"


def test_text_lines_words_and_polygon() -> None:
    box = {"Left": 0.25, "Top": 0.5, "Width": 0.5, "Height": 0.1}
    polygon = [{"X": 0.25, "Y": 0.5}, {"X": 0.75, "Y": 0.5}, {"X": 0.75, "Y": 0.6}, {"X": 0.25, "Y": 0.6}]
    response = {
        "TextDetections": [
            {
                "DetectedText": "HELLO WORLD",
                "Type": "LINE",
                "Id": 0,
                "Confidence": 99.0,
                "Geometry": {"BoundingBox": box, "Polygon": polygon},
            },
            {
                "DetectedText": "HELLO",
                "Type": "WORD",
                "Id": 1,
                "ParentId": 0,
                "Confidence": 98.0,
                "Geometry": {"BoundingBox": box},
            },
        ],
        "TextModelVersion": "3.0",
    }
    # A JPEG with Exif 3 (upside down): boxes come back upright, the stored columns are turned 180°.
    placement = BoxPlacement.for_response(
        image_format="JPEG",
        stored_width=400,
        stored_height=300,
        exif_orientation=3,
        orientation_correction=None,
    )
    line, word = table_rows(REGISTRY["text"], response, placement)["text"]
    assert (line["text_id"], line["parent_id"], line["type"]) == (0, None, "LINE")
    assert (word["text_id"], word["parent_id"], word["detected_text"]) == (1, 0, "HELLO")
    assert (line["box_left_px"], line["box_top_px"]) == (100, 150)
    assert (line["stored_box_left_px"], line["stored_box_top_px"]) == (100, 120)
    assert [(p["x_px"], p["y_px"]) for p in line["polygon"]] == [
        (100, 150),
        (300, 150),
        (300, 180),
        (100, 180),
    ]
    first_point = line["polygon"][0]
    assert (first_point["stored_x_px"], first_point["stored_y_px"]) == (300, 150)  # turned 180° in 400 x 300
    assert word["polygon"] is None
    assert line["model_version"] == "3.0"


def test_moderation_labels() -> None:
    response = {
        "ModerationLabels": [
            {"Confidence": 91.0, "Name": "Smoking", "ParentName": "Drugs & Tobacco", "TaxonomyLevel": 3},
            {"Confidence": 92.0, "Name": "Drugs & Tobacco", "ParentName": "", "TaxonomyLevel": 1},
        ],
        "ModerationModelVersion": "7.0",
    }
    rows = table_rows(REGISTRY["moderation"], response, BoxPlacement(10, 10))["moderation"]
    assert rows[1] == {
        "name": "Drugs & Tobacco",
        "parent_name": "",
        "taxonomy_level": 1,
        "confidence": 92.0,
        "model_version": "7.0",
        "content_types": None,
        "adapter": None,
    }


def test_celebrities_and_unrecognized_faces() -> None:
    face = {"BoundingBox": {"Left": 0.5, "Top": 0.25, "Width": 0.25, "Height": 0.5}, "Confidence": 99.9}
    response = {
        "CelebrityFaces": [
            {
                "Urls": ["www.imdb.com/name/nm0000001"],
                "Name": "Someone",
                "Id": "1a2B3c",
                "Face": face,
                "MatchConfidence": 98.5,
                "KnownGender": {"Type": "Female"},
            },
        ],
        "UnrecognizedFaces": [face, {"Confidence": 80.0}],
        "OrientationCorrection": None,
    }
    rows = table_rows(REGISTRY["celebrities"], response, BoxPlacement(800, 400))
    (celebrity,) = rows["celebrities"]
    assert (celebrity["celebrity_id"], celebrity["name"], celebrity["known_gender"]) == (
        "1a2B3c",
        "Someone",
        "Female",
    )
    assert (celebrity["match_confidence"], celebrity["face_confidence"]) == (98.5, 99.9)
    assert celebrity["urls"] == ["www.imdb.com/name/nm0000001"]
    assert (celebrity["box_left_px"], celebrity["box_top_px"], celebrity["box_width_px"]) == (400, 100, 200)
    assert [f["face_index"] for f in rows["unrecognized_faces"]] == [0, 1]
    assert rows["unrecognized_faces"][1]["box_left"] is None
    assert celebrities.flatten({}, BoxPlacement(1, 1)) == {"celebrities": [], "unrecognized_faces": []}


# --- full-shape responses drawn from the output shapes --------------------------------------------


def _items(response: Mapping[str, Any], key: str) -> list:
    return response.get(key) or []


#: For each analysis and table: how many rows a response must give.
EXPECTED_ROWS: dict[str, dict[str, Callable[[Mapping[str, Any]], int]]] = {
    "labels": {
        "labels": lambda r: len(_items(r, "Labels")),
        "label_instances": lambda r: sum(len(_items(label, "Instances")) for label in _items(r, "Labels")),
        "image_properties": lambda r: int("ImageProperties" in r),
    },
    "faces": {"faces": lambda r: len(_items(r, "FaceDetails"))},
    "text": {"text": lambda r: len(_items(r, "TextDetections"))},
    "moderation": {"moderation": lambda r: len(_items(r, "ModerationLabels"))},
    "celebrities": {
        "celebrities": lambda r: len(_items(r, "CelebrityFaces")),
        "unrecognized_faces": lambda r: len(_items(r, "UnrecognizedFaces")),
    },
    "index_faces": {
        "indexed_faces": lambda r: len(_items(r, "FaceRecords")),
        "unindexed_faces": lambda r: len(_items(r, "UnindexedFaces")),
    },
    "face_search": {"face_matches": lambda r: len(_items(r, "FaceMatches"))},
    # users and user_faces are the driver's rows (batch.faces.users), never a response's.
    "user_search": {
        "user_matches": lambda r: len(_items(r, "UserMatches")),
        "users": lambda r: 0,
        "user_faces": lambda r: 0,
    },
    "compare_faces": {
        "face_comparisons": lambda r: len(_items(r, "FaceMatches")),
        "face_comparison_misses": lambda r: 1,
    },
    "custom_labels": {"custom_labels": lambda r: len(_items(r, "CustomLabels"))},
    "ppe": {
        "ppe_persons": lambda r: len(_items(r, "Persons")),
        "ppe_equipment": lambda r: sum(
            len(_items(part, "EquipmentDetections"))
            for p in _items(r, "Persons")
            for part in _items(p, "BodyParts")
        ),
    },
}

placements = st.builds(
    BoxPlacement.for_response,
    image_format=st.sampled_from(["JPEG", "PNG", None]),
    stored_width=st.integers(0, 8000),  # 0: size unknown, pixel columns null
    stored_height=st.integers(0, 8000),
    exif_orientation=st.none() | st.sampled_from(ORIENTATIONS),
    orientation_correction=st.none() | st.sampled_from(["ROTATE_0", "ROTATE_90", "ROTATE_180", "ROTATE_270"]),
)


def test_expected_rows_cover_every_table() -> None:
    assert {name: set(tables) for name, tables in EXPECTED_ROWS.items()} == {
        name: set(analysis.tables) for name, analysis in REGISTRY.items()
    }
    assert sum(len(tables) for tables in EXPECTED_ROWS.values()) == len(all_tables()) - len(JOB_TABLES)


@pytest.mark.parametrize("analysis", ANALYSES, ids=by_name)
def test_full_shape_responses_flatten_to_valid_rows(analysis: Analysis) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(response_values(analysis.operation), placements)
    def flattens(response: dict[str, Any], placement: BoxPlacement) -> None:
        rows = table_rows(analysis, response, placement)
        for table, expected in EXPECTED_ROWS[analysis.name].items():
            assert len(rows[table]) == expected(response), table

    flattens()
