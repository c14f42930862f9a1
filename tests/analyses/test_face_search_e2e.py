"""Face search and face comparison end to end: `rekbatch run --analyses
index_faces,face_search,compare_faces` over a prefix, then `face_search` alone over another, then the
first again (nothing changed) and with one more reference, as subprocesses on the local stack, checked
against the samples' ground truth.

The convention (docs/local-stack.md): faces are red (or orange, the celebrity) rectangles, and two
faces are the same person when their aspect ratios match: the samples draw two identity groups, 3:4
and 1:1. A user checks that every face was indexed once with an upright box in all eight Exif
orientations, that every face of a group photo was searched and compared (not only the largest), that
matches and comparisons only join faces of one identity, and that the boxes are upright whatever the
Exif orientation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch.query import views
from local_stack import samples
from local_stack.samples import GroundTruth, SampleTruth, TruthObject
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "search"
ORIENTED = [f"orientation/exif-{o}.jpg" for o in range(1, 9)]
INDEXED = ["group/team.jpg", "plain/street.jpg", "empty/nothing.jpg", *ORIENTED]
QUERIES = [*ORIENTED, "group/team.jpg"]
#: Reference photos, under refs/: a group photo (five faces, both identities), then an Exif-6 one.
REFERENCES = ["group/team.jpg", "orientation/exif-6.jpg"]


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    return samples.generate(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def stack(truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.getbasetemp() / "samples0"
    with LocalStack() as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        for prefix, names in (("people/", INDEXED), ("queries/", QUERIES), ("refs/", REFERENCES)):
            for name in names:
                s3.put_object(Bucket=BUCKET, Key=prefix + name, Body=(folder / name).read_bytes())
        yield local


def run_cli(
    stack: LocalStack, out: Path, prefix: str, analyses: str, *more: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", str(out), "--analyses", analyses,
               "--collection", "crew", *more]  # fmt: skip
    environment = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1"}
    return subprocess.run(
        command, env=environment, cwd=out.parent, capture_output=True, text=True, timeout=300
    )


def rekbatch(stack: LocalStack, out: Path, prefix: str, analyses: str, *more: str) -> str:
    done = run_cli(stack, out, prefix, analyses, *more)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(out: Path, sql: str) -> list[dict[str, Any]]:
    with views.connect(str(out)) as db:
        result = db.sql(sql)
        return [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]


def calls(stack: LocalStack, since: int, outcome: str = "ok") -> Counter[str]:
    return Counter(c["operation"] for c in stack.calls()[since:] if c["outcome"] == outcome)


def drawn_face(sample: SampleTruth, row: dict[str, Any]) -> TruthObject:
    """The drawn face whose upright box the row's box is (2 px of JPEG noise allowed), or fail."""
    box = (row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"])
    found = [f for f in sample.faces if max(abs(a - b) for a, b in zip(box, f.box_px, strict=True)) <= 2]
    assert len(found) == 1, f"{sample.name}: box {box} is none of the drawn faces"
    return found[0]


def identity_of_face_ids(truth: GroundTruth, out: Path) -> dict[str, str | None]:
    """Each indexed face's identity, by its upright box: a box that is none of the drawn faces fails."""
    indexed = rows(
        out, "SELECT key, face_id, box_left_px, box_top_px, box_width_px, box_height_px FROM indexed_faces"
    )
    return {
        r["face_id"]: drawn_face(truth.by_name(r["key"].removeprefix("people/")), r).identity for r in indexed
    }


def reference_face(truth: GroundTruth, row: dict[str, Any]) -> TruthObject:
    """The drawn face of the reference photo whose upright normalised box the row's reference box is."""
    sample = truth.by_name(row["reference_key"].removeprefix("refs/"))
    box = (row["reference_box_left"], row["reference_box_top"], row["reference_box_width"],
           row["reference_box_height"])  # fmt: skip
    found = [f for f in sample.faces if max(abs(a - b) for a, b in zip(box, f.box, strict=True)) <= 0.01]
    assert len(found) == 1, f"{sample.name}: reference box {box} is none of the drawn faces"
    return found[0]


def check_comparisons(truth: GroundTruth, out: Path, run_id: str, references: list[str]) -> None:
    """The run compared every face of every image with every face of every reference photo: a row
    for each pair of one identity (boxes upright in every orientation), the others counted as misses."""
    compared = rows(out, f"SELECT * FROM face_comparisons WHERE run_id = '{run_id}'")
    pairs = []
    by_index: dict[tuple[str, int], TruthObject] = {}
    for row in compared:
        image_face = drawn_face(truth.by_name(row["key"].removeprefix("people/")), row)
        reference = reference_face(truth, row)
        by_index[(row["reference_key"], row["reference_face_index"])] = reference
        assert image_face.identity == reference.identity, row
        assert row["similarity"] >= 80
        pairs.append((row["key"], image_face, row["reference_key"], reference))
    faced = [n for n in INDEXED if truth.by_name(n).faces]
    reference_faces = [(f"refs/{r}", f) for r in references for f in truth.by_name(r).faces]
    assert sorted(map(repr, pairs)) == sorted(
        repr((f"people/{n}", f, ref, g))
        for n in faced for f in truth.by_name(n).faces
        for ref, g in reference_faces if f.identity == g.identity
    )  # fmt: skip
    assert len(by_index) == len(reference_faces)  # every reference face, not only each photo's largest
    misses = rows(out, f"SELECT * FROM face_comparison_misses WHERE run_id = '{run_id}'")
    assert len(misses) == len(faced) * len(reference_faces)
    for miss in misses:
        drawn = truth.by_name(miss["key"].removeprefix("people/")).faces
        identity = by_index[(miss["reference_key"], miss["reference_face_index"])].identity
        assert miss["faces_compared"] == len(drawn)
        assert miss["faces_unmatched"] == sum(f.identity != identity for f in drawn)
    # The image without a face: analysed, zero comparisons, no error.
    (empty,) = rows(
        out, f"SELECT * FROM images WHERE run_id = '{run_id}' AND key = 'people/empty/nothing.jpg'"
    )
    assert empty["status"] == "analysed"
    assert "compare_faces" in empty["analyses"]
    assert rows(out, f"SELECT * FROM errors WHERE run_id = '{run_id}'") == []


def test_every_face_is_indexed_searched_and_compared_with_only_the_same_person(
    stack: LocalStack, truth: GroundTruth, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # 1. Index a prefix, search its faces and compare them with a reference photo in the same run:
    # SearchFaces by the FaceIds just stored, CompareFaces with each face of the reference.
    before = len(stack.calls())
    reference = f"s3://{BUCKET}/refs/{REFERENCES[0]}"
    everything = "index_faces,face_search,compare_faces"
    rekbatch(stack, out, "people/", everything, "--reference", reference, "--run-id", "faces-1")
    identity = identity_of_face_ids(truth, out)  # every indexed box is a drawn face, upright
    assert {truth.by_name(n).exif_orientation for n in INDEXED} == set(range(1, 9))
    drawn = sum(len(truth.by_name(n).faces) for n in INDEXED)
    assert len(identity) == drawn  # every face indexed once
    made = calls(stack, before)
    assert made["SearchFaces"] == drawn
    assert made["SearchFacesByImage"] == 0
    faced = [n for n in INDEXED if truth.by_name(n).faces]
    reference_faces = len(truth.by_name(REFERENCES[0]).faces)
    # The reference, once; and face_search detects the faces of the image IndexFaces found none in.
    assert made["DetectFaces"] == 2
    assert made["CompareFaces"] == len(faced) * reference_faces
    # The faceless image: each reference face is told "no face" (unbilled), since any could be at fault.
    assert calls(stack, before, "InvalidParameterException")["CompareFaces"] == reference_faces
    check_comparisons(truth, out, "faces-1", REFERENCES[:1])
    by_id = rows(out, "SELECT searched_face_id, face_id, similarity, matched_key FROM face_matches")
    # Images are indexed in parallel, so a face searched early misses faces indexed later; the later
    # one's search finds it. Every pair of faces of one person is joined, in at least one direction.
    pairs = {frozenset((r["searched_face_id"], r["face_id"])) for r in by_id}
    assert pairs == {
        frozenset((a, b)) for a in identity for b in identity if a != b and identity[a] == identity[b]
    }
    for match in by_id:
        assert match["face_id"] != match["searched_face_id"]
        assert identity[match["face_id"]] == identity[match["searched_face_id"]], match
        assert match["similarity"] >= 80
        assert match["matched_key"].removeprefix("people/") in INDEXED

    # 2. Search images that are not indexed: each drawn face cut out and searched alone.
    before = len(stack.calls())
    rekbatch(stack, out, "queries/", "face_search")
    made = calls(stack, before)
    searched_faces = sum(len(truth.by_name(n).faces) for n in QUERIES)
    assert made["DetectFaces"] == len(QUERIES)
    assert made["SearchFacesByImage"] == searched_faces  # 8 oriented faces + all 5 of the group photo
    by_image = rows(out, "SELECT * FROM face_matches WHERE searched_by = 'image'")
    searched = {(r["key"], r["face_index"]) for r in by_image}
    assert len(searched) == searched_faces  # every face found a match, the group photo's five included
    for match in by_image:
        sample = truth.by_name(match["key"].removeprefix("queries/"))
        face = drawn_face(sample, match)  # the searched box is upright in all eight orientations
        assert identity[match["face_id"]] == face.identity, match
        assert match["matched_key"].removeprefix("people/") in INDEXED

    # 3. The "same person" query groups every face, indexed or searched by its crop, by identity.
    query = (ROOT / "docs" / "queries" / "same_person_groups.sql").read_text(encoding="utf-8")
    groups = rows(out, query)
    assert len(groups) == 2  # the two identity groups of the samples
    searched_images = {"people/": INDEXED, "queries/": QUERIES}
    assert sorted((g["faces"], g["keys"]) for g in groups) == sorted(
        (
            sum(f.identity == group for p, names in searched_images.items() for n in names
                for f in truth.by_name(n).faces),
            sorted({p + n for p, names in searched_images.items() for n in names
                    for f in truth.by_name(n).faces if f.identity == group}),
        )
        for group in ("3:4", "1:1")
    )  # fmt: skip

    # 4. Nothing changed: no image is indexed, searched or compared again, and the reference's faces
    # are read from the output (`_references/`), not detected again: nothing billed at all.
    before = len(stack.calls())
    rekbatch(stack, out, "people/", everything, "--reference", reference, "--run-id", "faces-2")
    made = calls(stack, before)
    assert (made["IndexFaces"], made["SearchFaces"], made["CompareFaces"], made["DetectFaces"]) == (
        0,
        0,
        0,
        0,
    )

    # 5. One more reference photo (a prefix now holds both): every image is compared with every face of
    # the new one only (the first one's comparisons are settled); nothing is indexed or searched again.
    # The dry run said so, calling nothing billed (the collection's faces are read): once per image and
    # new reference photo, at least.
    both = ("--reference", f"s3://{BUCKET}/refs/")
    before = len(stack.calls())
    planned = rekbatch(stack, out, "people/", everything, *both, "--dry-run")
    assert {c["operation"] for c in stack.calls()[before:]} == {"DescribeCollection", "ListFaces"}
    assert f"would call CompareFaces at least {len(INDEXED)} times" in planned
    assert "would call DetectFaces at most 1 times" in planned  # only the new reference photo
    rekbatch(stack, out, "people/", everything, *both, "--run-id", "faces-3")
    made = calls(stack, before)
    new_faces = len(truth.by_name(REFERENCES[1]).faces)
    assert (made["IndexFaces"], made["SearchFaces"], made["DetectFaces"]) == (0, 0, 1)
    assert made["CompareFaces"] == len(faced) * new_faces
    assert calls(stack, before, "InvalidParameterException")["CompareFaces"] == new_faces  # the faceless
    check_comparisons(truth, out, "faces-3", REFERENCES[1:])


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("refs/missing.jpg", "no such key"),
        ("people/empty/nothing.jpg", "no face found in it"),
        ("nobody/", "no images under it"),
    ],
)
def test_an_unusable_reference_stops_the_run_before_it_starts(
    stack: LocalStack, tmp_path: Path, reference: str, reason: str
) -> None:
    out = tmp_path / "out"
    done = run_cli(stack, out, "people/", "compare_faces", "--reference", f"s3://{BUCKET}/{reference}")
    assert (done.returncode, done.stderr) == (
        2,
        f"rekbatch: error: analyses.compare_faces.references: s3://{BUCKET}/{reference}: {reason}\n",
    )
    assert not (out / "_runs").exists()  # no attempt was claimed: nothing to resume or collect


def test_a_reference_rekognition_would_refuse_is_refused_before_any_call(
    stack: LocalStack, tmp_path: Path
) -> None:
    """Decided from its header, as an input image would be: no DetectFaces call, one line, exit 2."""
    stack.s3_client().put_object(Bucket=BUCKET, Key="refs-bad/notes.jpg", Body=b"not an image at all")
    out = tmp_path / "out"
    before = len(stack.calls())
    done = run_cli(stack, out, "people/", "compare_faces", "--reference", f"s3://{BUCKET}/refs-bad/")
    prefix = f"rekbatch: error: analyses.compare_faces.references: s3://{BUCKET}/refs-bad/notes.jpg: "
    assert done.returncode == 2
    assert done.stderr.startswith(prefix + "not usable as a reference: ")
    assert done.stderr.count("\n") == 1
    assert calls(stack, before)["DetectFaces"] == 0


def test_a_corrupt_image_compared_alone_is_rejected_once(stack: LocalStack, tmp_path: Path) -> None:
    """compare_faces sends the image itself as CompareFaces' target: an image Rekognition cannot decode
    is `rejected` (settled), not `failed`, so the next run does not pay for it again. (Only its
    InvalidParameterException may be about a reference face.)"""
    (data,) = [data for data, truth in samples.bad_samples() if truth.name == "bad/truncated.jpg"]
    stack.s3_client().put_object(Bucket=BUCKET, Key="corrupt/truncated.jpg", Body=data)
    out = tmp_path / "out"
    out.mkdir()
    reference = f"s3://{BUCKET}/refs/{REFERENCES[0]}"
    for run_id in ("corrupt-1", "corrupt-2"):
        before = len(stack.calls())
        rekbatch(stack, out, "corrupt/", "compare_faces", "--reference", reference, "--run-id", run_id)
        compared = calls(stack, before, "InvalidImageFormatException")["CompareFaces"]
        assert compared == (1 if run_id == "corrupt-1" else 0), run_id
    images = rows(out, "SELECT run_id, status, status_reason FROM images WHERE key = 'corrupt/truncated.jpg'")
    assert images == [
        {"run_id": "corrupt-1", "status": "rejected", "status_reason": "InvalidImageFormatException"}
    ]
