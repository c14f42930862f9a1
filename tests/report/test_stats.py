"""batch.report.stats: the report's counts, part by part, and the gallery's sample."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from batch.analyses.registry import all_tables
from batch.core.tables import box_fields, rows_to_table, table_schema
from batch.report.stats import RunStats, StratifiedSample, box_layers, boxes_of

#: (stratum, key) pairs with distinct keys, as a run's images are.
offers = st.lists(st.tuples(st.sampled_from("abcde"), st.text(min_size=1, max_size=6)), max_size=60).map(
    lambda pairs: list({key: (stratum, key) for stratum, key in pairs}.values())
)


def sample_of(pairs: list[tuple[str, str]], per_stratum: int) -> StratifiedSample[str]:
    sample: StratifiedSample[str] = StratifiedSample(per_stratum)
    for stratum, key in pairs:
        sample.offer(stratum, key, key)
    return sample


@given(offers, st.integers(0, 5), st.integers(0, 30), st.randoms(use_true_random=False))
def test_the_sample_does_not_depend_on_the_order_images_come_in(
    pairs: list[tuple[str, str]], per_stratum: int, count: int, random: object
) -> None:
    shuffled = list(pairs)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assert sample_of(pairs, per_stratum).take(count) == sample_of(shuffled, per_stratum).take(count)


@given(offers, st.integers(1, 5), st.integers(0, 30))
def test_every_stratum_is_shown_before_any_is_shown_twice(
    pairs: list[tuple[str, str]], per_stratum: int, count: int
) -> None:
    sample = sample_of(pairs, per_stratum)
    taken = sample.take(count)
    stratum_of = {key: stratum for stratum, key in pairs}
    strata = {stratum for stratum, _ in pairs}
    kept = sum(min(per_stratum, n) for n in sample.offered.values())
    assert len(taken) == min(count, kept)
    assert len(set(taken)) == len(taken)
    shown = [stratum_of[key] for key in taken]
    assert all(shown.count(s) <= per_stratum for s in strata)
    # Round-robin: the first min(count, strata) items come from distinct strata.
    first_round = shown[: min(len(taken), len(strata))]
    assert len(set(first_round)) == len(first_round)
    assert sample.total == len(pairs)


def table(name: str, rows: list[dict[str, object]]) -> pa.Table:
    schema = all_tables()[name]
    common = {"run_id": "r1", "bucket": "b", "etag": "e"}
    return rows_to_table([{**common, **row} for row in rows], schema)


def test_faces_per_image_counts_images_without_faces() -> None:
    stats = RunStats()
    stats.add(
        "images",
        table(
            "images",
            [
                {"key": "a", "status": "analysed", "analyses": ["labels", "faces"]},
                {"key": "b", "status": "analysed", "analyses": ["labels", "faces"]},
                {"key": "c", "status": "analysed", "analyses": ["faces"]},
                {"key": "d", "status": "rejected", "analyses": []},
            ],
        ),
    )
    stats.add(
        "faces",
        table(
            "faces",
            [{"key": "a", "face_index": 0}, {"key": "a", "face_index": 1}, {"key": "c", "face_index": 0}],
        ),
    )
    assert stats.faces_histogram() == {0: 1, 1: 1, 2: 1}


def test_names_confidences_errors_and_quotas_add_up_over_parts() -> None:
    stats = RunStats()
    for part in range(2):
        stats.add(
            "labels",
            table(
                "labels",
                [
                    {"key": f"k{part}", "name": "Person", "confidence": 97.0},
                    {"key": f"k{part}", "name": "Box", "confidence": 12.0},
                ],
            ),
        )
        stats.add(
            "text",
            table(
                "text",
                [
                    {"key": "k", "type": "LINE", "confidence": 88.0},
                    {"key": "k", "type": "WORD", "confidence": 3.0},
                ],
            ),
        )
        stats.add("errors", table("errors", [{"key": "z", "error_code": "EmptyObject"}]))
        stats.add(
            "call_seconds",
            table(
                "call_seconds",
                [
                    {
                        "second": part,
                        "operation": "DetectFaces",
                        "outcome": "ok",
                        "calls": 5,
                        "quota_tps": 7.5,
                    },
                ],
            ),
        )
    assert stats.top("labels") == [("Person", 2), ("Box", 2)]
    assert stats.confidence["labels"].tolist()[19] == 2  # 97 in the 95-100 bin
    assert stats.confidence["labels"].tolist()[2] == 2  # 12 in the 10-15 bin
    assert stats.confidence["text"].sum() == 2  # lines only, not words
    assert stats.errors == {("EmptyObject", ""): 2}
    assert stats.timeline == [(0, "DetectFaces", "ok", 5), (1, "DetectFaces", "ok", 5)]
    assert stats.quotas == {"DetectFaces": 7.5}


def test_layers_leave_out_repeated_faces_and_draw_a_new_box_table() -> None:
    tables = all_tables()
    names = [layer.table for layer in box_layers(tables)]
    assert names == [
        "label_instances", "text", "faces", "celebrities", "ppe_persons", "ppe_equipment", "custom_labels",
    ]  # fmt: skip  # the other face tables: same faces
    without_faces = {name: schema for name, schema in tables.items() if name != "faces"}
    assert "unrecognized_faces" in [layer.table for layer in box_layers(without_faces)]
    future = table_schema([pa.field("similarity", pa.float64()), *box_fields()])
    assert [layer.table for layer in box_layers({"face_matches": future})] == ["face_matches"]


def test_boxes_of_the_chosen_keys_with_captions_and_only_text_lines() -> None:
    (text_layer,) = [layer for layer in box_layers(all_tables()) if layer.table == "text"]
    box = {"box_left": 0.1, "box_top": 0.2, "box_width": 0.3, "box_height": 0.05}
    rows = table(
        "text",
        [
            {"key": "a", "type": "LINE", "detected_text": "LOCAL STACK", **box},
            {"key": "a", "type": "WORD", "detected_text": "LOCAL", **box},
            {"key": "a", "type": "LINE", "detected_text": "no box"},
            {"key": "b", "type": "LINE", "detected_text": "other image", **box},
        ],
    )
    drawn = boxes_of(text_layer, rows, {"a"})
    assert list(drawn) == ["a"]
    ((only,),) = drawn.values()
    assert (only.caption, only.layer, only.table) == ("“LOCAL STACK”", "text line", "text")
    assert (only.left, only.top, only.width, only.height) == (0.1, 0.2, 0.3, 0.05)


def test_ppe_boxes_are_captioned_with_the_person_s_verdict_and_the_equipment() -> None:
    layers = {layer.table: layer for layer in box_layers(all_tables())}
    person = {"person_id": 2, "summary": "without_required"}
    assert layers["ppe_persons"].caption(person) == "person 2 (without required)"
    assert layers["ppe_persons"].caption({"person_id": 0, "summary": None}) == "person 0"
    item = {"equipment_type": "HEAD_COVER", "body_part": "HEAD"}
    assert layers["ppe_equipment"].caption(item) == "HEAD_COVER on HEAD"
