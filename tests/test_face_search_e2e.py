"""Face search end to end: `rekbatch run --analyses index_faces,face_search` and then `face_search`
alone, as subprocesses on the local stack, checked against the samples' ground truth.

The convention (docs/local-stack.md): faces are red (or orange, the celebrity) rectangles, and two
faces are the same person when their aspect ratios match: the samples draw two identity groups, 3:4
and 1:1. A user checks that every face of a group photo was searched (not only the largest), that
matches only join faces of one identity, and that the searched faces' boxes are upright whatever the
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

from batch import readers
from batch.local import samples
from batch.local.samples import GroundTruth, SampleTruth, TruthObject
from batch.local.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "search"
ORIENTED = [f"orientation/exif-{o}.jpg" for o in range(1, 9)]
INDEXED = ["group/team.jpg", "plain/street.jpg", "orientation/exif-1.jpg"]
QUERIES = [*ORIENTED, "group/team.jpg"]


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    return samples.generate(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def stack(truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.getbasetemp() / "samples0"
    with LocalStack() as local:
        s3 = local.s3_client()
        s3.create_bucket(Bucket=BUCKET)
        for prefix, names in (("people/", INDEXED), ("queries/", QUERIES)):
            for name in names:
                s3.put_object(Bucket=BUCKET, Key=prefix + name, Body=(folder / name).read_bytes())
        yield local


def rekbatch(stack: LocalStack, out: Path, prefix: str, analyses: str) -> None:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
               "--input", f"s3://{BUCKET}/{prefix}", "--output", str(out), "--analyses", analyses,
               "--collection", "crew"]  # fmt: skip
    environment = {**os.environ, **stack.env, "REKBATCH_DASK__N_WORKERS": "1"}
    done = subprocess.run(
        command, env=environment, cwd=out.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def rows(out: Path, sql: str) -> list[dict[str, Any]]:
    with readers.connect(str(out)) as db:
        result = db.sql(sql)
        return [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]


def calls(stack: LocalStack, since: int) -> Counter[str]:
    return Counter(c["operation"] for c in stack.calls()[since:] if c["outcome"] == "ok")


def drawn_face(sample: SampleTruth, row: dict[str, Any]) -> TruthObject:
    """The drawn face whose upright box the row's box is (2 px of JPEG noise allowed), or fail."""
    box = (row["box_left_px"], row["box_top_px"], row["box_width_px"], row["box_height_px"])
    found = [f for f in sample.faces if max(abs(a - b) for a, b in zip(box, f.box_px, strict=True)) <= 2]
    assert len(found) == 1, f"{sample.name}: box {box} is none of the drawn faces"
    return found[0]


def identity_of_face_ids(truth: GroundTruth, out: Path) -> dict[str, str | None]:
    indexed = rows(
        out, "SELECT key, face_id, box_left_px, box_top_px, box_width_px, box_height_px FROM indexed_faces"
    )
    return {
        r["face_id"]: drawn_face(truth.by_name(r["key"].removeprefix("people/")), r).identity for r in indexed
    }


def test_every_face_is_searched_and_matches_only_the_same_person(
    stack: LocalStack, truth: GroundTruth, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # 1. Index a prefix and search its faces in the same run: SearchFaces by the FaceIds just stored.
    before = len(stack.calls())
    rekbatch(stack, out, "people/", "index_faces,face_search")
    identity = identity_of_face_ids(truth, out)
    drawn = sum(len(truth.by_name(n).faces) for n in INDEXED)
    assert len(identity) == drawn  # every face indexed once
    made = calls(stack, before)
    assert made["SearchFaces"] == drawn
    assert made["SearchFacesByImage"] == 0
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

    # 3. The documented "same person" query groups the indexed faces by identity.
    docs = (ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    query = docs[docs.index("WITH RECURSIVE edges") : docs.index("len(keys) DESC;") + len("len(keys) DESC")]
    groups = rows(out, query)
    assert len(groups) == 2  # the two identity groups of the samples
    assert sorted(sorted(k.removeprefix("people/") for k in g["keys"]) for g in groups) == sorted(
        sorted({n for n in INDEXED for f in truth.by_name(n).faces if f.identity == group})
        for group in ("3:4", "1:1")
    )
