"""docs/queries/: every query runs on the output of two demo runs and returns what the ground truth says.

Two incremental runs of the CLI on the local stack (moto's S3 server, our Rekognition endpoint, a
LocalCluster with worker processes), shared by every query: the first over a few samples with every
analysis, the second over those plus a few more without `celebrities`. So the queries meet what a
nightly output holds: images analysed in an older run, unchanged images with no row in the newer one,
a flag that is new in the last run, an analysis not yet run on some images. The face queries read a
third run, into its own output: a few samples indexed into a collection, searched (among its faces, and
among the users of a `people/` layout of reference photos) and compared with a
reference photo. Expected rows come from the sample set's ground truth (`local_stack.samples`),
computed independently of the endpoint. The face queries also read runs committed from rows built by
hand (`Runs`): what several nightly runs leave (a replaced reference photo, a new similarity threshold,
an image replaced by a photo of someone else) without running the job each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import COMMITTED_AT, commit_rows

from batch.analyses.registry import REGISTRY, default_prices
from batch.query import shell as sql_shell
from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.sink import Destination
from local_stack.samples import PEOPLE, GroundTruth, SampleTruth, seed_people
from local_stack.stack import LocalStack, seed_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ROOT / "docs" / "queries"
BUCKET, PREFIX = "queries-input", "photos/"
#: Globs under the prefix. First run: celebrities, a flagged PNG, a group without text, bad files.
FIRST = [
    "orientation/exif-1.jpg",
    "orientation/exif-6.jpg",
    "plain/no-exif.jpeg",
    "group/team.jpg",
    "png/flagged.png",
    "bad/text.jpg",
    "bad/zero.jpg",
]
#: Added for the second run: a new moderation flag, a face without text, a converted TIFF.
ADDED = [
    "png/shapes.png",
    "odd/a=b+c%20d.jpg",
    "odd/café-nfc.jpg",
    "orientation/exif-8.jpg",
    "other/turned.tiff",
]
#: The faces run: both identities, a group photo, Exif orientations, a Unicode key, a faceless image.
FACES = [
    "orientation/exif-1.jpg",
    "orientation/exif-6.jpg",
    "group/team.jpg",
    "plain/street.jpg",
    "odd/café-nfc.jpg",
    "empty/nothing.jpg",
]
FACES_ANALYSES = ("index_faces", "face_search", "compare_faces", "user_search")
#: Its reference photo: outside the prefix, one face (3:4).
REFERENCE = "photos-archive/old.jpg"
FIRST_ANALYSES = ("labels", "faces", "text", "moderation", "celebrities")
SECOND_ANALYSES = ("labels", "faces", "text", "moderation")
RUN_IDS = ("nightly-1", "nightly-2")
COLLECTION = "demo"
VARIABLES = {"celebrity": "Ada Lovelace", "word": "stack", "analysis": "celebrities", "reference": REFERENCE}
TOLERANCE = 0.002


@dataclass
class Demo:
    output: Path
    truth: GroundTruth
    first: list[SampleTruth]
    added: list[SampleTruth]
    #: The faces run's output and images.
    faces_output: Path
    faces: list[SampleTruth]

    @property
    def every(self) -> list[SampleTruth]:
        return self.first + self.added

    def run_of(self, sample: SampleTruth) -> str:
        return RUN_IDS[0] if sample in self.first else RUN_IDS[1]

    def analysed(self, samples: list[SampleTruth] | None = None) -> list[SampleTruth]:
        return [s for s in (self.every if samples is None else samples) if s.job_status == "analysed"]

    def query(self, name: str, *, faces: bool = False) -> list[dict[str, Any]]:
        """The rows of docs/queries/<name>.sql over the demo runs' output (or the faces run's)."""
        return query_rows(self.faces_output if faces else self.output, name)


def query_rows(output: Path, name: str) -> list[dict[str, Any]]:
    """The rows of the last result of docs/queries/<name>.sql over the committed runs of `output`, as
    dicts."""
    results: list[list[dict[str, Any]]] = []

    def keep(relation: Any) -> None:
        results.append([dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()])

    with views.connect(str(output)) as connection:
        sql = (QUERIES / f"{name}.sql").read_text(encoding="utf-8")
        sql_shell.run_script(connection, sql, VARIABLES, keep)
    return results[-1]


def run_job(
    stack: LocalStack, output: Path, run_id: str, include: list[str], analyses: tuple[str, ...], *more: str
) -> None:
    command = [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml")]
    command += ["--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(output), "--run-id", run_id]
    command += ["--analyses", ",".join(analyses), *more]
    env = {
        **os.environ,
        **stack.env,
        "REKBATCH_INPUT__INCLUDE": json.dumps(include),
        "REKBATCH_REPORT__ENABLED": "false",  # these tests read the tables only
    }
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """Both runs, then the servers stop: the output is a local folder the queries read on their own."""
    tmp = tmp_path_factory.mktemp("queries")
    with LocalStack() as stack:
        truth = seed_samples(stack.s3_client(), BUCKET, PREFIX, tmp / "samples")
        output = tmp / "out"
        run_job(stack, output, RUN_IDS[0], FIRST, FIRST_ANALYSES)
        run_job(stack, output, RUN_IDS[1], FIRST + ADDED, SECOND_ANALYSES)
        faces_output = tmp / "faces-out"
        seed_people(stack.s3_client(), BUCKET)
        reference = ["--reference", f"s3://{BUCKET}/{REFERENCE}", "--collection", COLLECTION]
        reference += ["--users", f"s3://{BUCKET}/people/"]
        run_job(stack, faces_output, "faces-1", FACES, FACES_ANALYSES, *reference)
    return Demo(
        output,
        truth,
        [truth.by_key(PREFIX + name) for name in FIRST],
        [truth.by_key(PREFIX + name) for name in ADDED],
        faces_output,
        [truth.by_key(PREFIX + name) for name in FACES],
    )


def truth_labels(sample: SampleTruth) -> set[str]:
    """The labels the palette convention gives (docs/local-stack.md): ancestors of Face are labels too."""
    names = {"Box"} if sample.of_kind("box") else set()
    names |= {"Face", "Person", "Head"} if sample.faces else set()
    return names | ({"Text"} if sample.line_texts else set())


def keys(rows: list[dict[str, Any]]) -> list[str]:
    return [row["key"] for row in rows]


# --- one test per query, named after its file ------------------------------------------------------------


def check_faces_without_text(demo: Demo) -> None:
    rows = demo.query("faces_without_text")
    expected = sorted((s.key, len(s.faces)) for s in demo.analysed() if s.faces and not s.line_texts)
    assert [(r["key"], r["faces"]) for r in rows] == expected
    assert expected  # the selection has such images: the query is not vacuously right


def check_top_labels_by_day(demo: Demo) -> None:
    rows = demo.query("top_labels_by_day")
    counted: Counter[str] = Counter()
    for row in rows:
        counted[row["name"]] += row["images"]
    assert counted == Counter(name for s in demo.analysed() for name in truth_labels(s))
    for day in {row["dt"] for row in rows}:
        counts = [row["images"] for row in rows if row["dt"] == day]
        assert counts == sorted(counts, reverse=True)


def check_new_moderation_flags(demo: Demo) -> None:
    rows = demo.query("new_moderation_flags")
    assert sorted(set(keys(rows))) == sorted(s.key for s in demo.analysed(demo.added) if s.moderation)
    assert {s.key for s in demo.first if s.moderation}  # an older flag exists and is not repeated
    assert {row["taxonomy_level"] for row in rows} >= {1}


def check_photos_of_a_celebrity(demo: Demo) -> None:
    rows = demo.query("photos_of_a_celebrity")
    # Only the first run asked for celebrities.
    expected = sorted(s.key for s in demo.analysed(demo.first) for _ in s.of_kind("celebrity"))
    assert keys(rows) == expected
    assert expected
    for row in rows:
        sample = demo.truth.by_key(row["key"])
        _, top, width, height = next(
            o.box_px for o in sample.of_kind("celebrity") if abs(o.box_px[0] - row["box_left_px"]) <= 2
        )
        assert abs(row["box_top_px"] - top) <= 2
        assert abs(row["box_width_px"] - width) <= 2
        assert abs(row["box_height_px"] - height) <= 2


def check_images_by_status(demo: Demo) -> None:
    rows = demo.query("images_by_status")
    expected = Counter((s.job_status, s.job_error) for s in demo.every)
    assert {(r["status"], r["status_reason"]): r["images"] for r in rows} == expected


def ok_calls(demo: Demo, samples: list[SampleTruth], analyses: tuple[str, ...]) -> dict[str, int]:
    """Successful calls per operation: one per analysed image and analysis (none fail here)."""
    return {REGISTRY[a].operation: len(demo.analysed(samples)) for a in analyses}


def check_calls_per_run(demo: Demo) -> None:
    rows = demo.query("calls_per_run")
    for run_id, samples, analyses in (
        (RUN_IDS[0], demo.first, FIRST_ANALYSES),
        (RUN_IDS[1], demo.added, SECOND_ANALYSES),
    ):
        mine = [r for r in rows if r["run_id"] == run_id]
        assert {r["operation"]: r["ok"] for r in mine} == ok_calls(demo, samples, analyses)
        for row in mine:
            assert row["calls"] == row["ok"] + row["throttled"] + row["errors"]
    assert [r["run_id"] for r in rows] == sorted(r["run_id"] for r in rows)  # oldest run first


def check_cost_per_run(demo: Demo) -> None:
    rows = demo.query("cost_per_run")
    assert [r["run_id"] for r in rows] == list(RUN_IDS)
    for row, samples, analyses in zip(
        rows, (demo.first, demo.added), (FIRST_ANALYSES, SECOND_ANALYSES), strict=True
    ):
        analysed = len(demo.analysed(samples))
        assert row["images_analysed"] == analysed
        prices = default_prices()
        assert row["cost_usd"] == pytest.approx(sum(prices[a] * analysed for a in analyses), abs=1e-4)
        assert row["usd_per_1000_images"] == pytest.approx(1000 * row["cost_usd"] / analysed, rel=1e-2)
    assert rows[1]["images_unchanged"] == len(demo.first)


def check_exif_orientation_mix(demo: Demo) -> None:
    rows = demo.query("exif_orientation_mix")
    readable = [s for s in demo.every if s.format not in ("TEXT", "EMPTY")]
    expected = Counter((s.format, s.exif_orientation) for s in readable)
    assert {(r["format"], r["exif_orientation"]): r["images"] for r in rows} == expected


def check_largest_faces(demo: Demo) -> None:
    rows = demo.query("largest_faces")
    truth = sorted(
        ((o.box[2] * o.box[3], s.key) for s in demo.analysed() for o in s.faces), key=lambda t: -t[0]
    )
    assert len(rows) == min(20, len(truth))
    for row, (share, _) in zip(rows, truth, strict=False):
        assert row["area_share"] == pytest.approx(share, abs=TOLERANCE)
        assert any(key == row["key"] and abs(s - share) <= TOLERANCE for s, key in truth)


def check_text_lines_containing(demo: Demo) -> None:
    rows = demo.query("text_lines_containing")
    word = VARIABLES["word"].lower()
    expected = Counter(s.key for s in demo.analysed() for line in s.line_texts if word in line.lower())
    assert Counter(keys(rows)) == expected
    assert expected


def check_latest_result_per_image(demo: Demo) -> None:
    rows = demo.query("latest_result_per_image")
    got = {r["key"]: (r["latest_run_id"], r["status"], r["analyses_settled"]) for r in rows}
    expected = {
        s.key: (demo.run_of(s), s.job_status, sorted(FIRST_ANALYSES if s in demo.first else SECOND_ANALYSES))
        for s in demo.every
    }
    assert got == expected


def check_images_missing_an_analysis(demo: Demo) -> None:
    rows = demo.query("images_missing_an_analysis")
    assert keys(rows) == sorted(s.key for s in demo.added)  # the second run did not ask for celebrities


def check_run_history(demo: Demo) -> None:
    rows = demo.query("run_history")
    assert [r["run_id"] for r in rows] == list(RUN_IDS)
    first, second = rows
    assert (first["listed"], first["analysed"], first["unchanged"]) == (
        len(demo.first),
        len(demo.analysed(demo.first)),
        0,
    )
    assert (second["listed"], second["analysed"], second["unchanged"]) == (
        len(demo.every),
        len(demo.analysed(demo.added)),
        len(demo.first),
    )
    assert second["analyses"] == list(SECOND_ANALYSES)


def check_images_of_reference_person(demo: Demo) -> None:
    rows = demo.query("images_of_reference_person", faces=True)
    (person,) = {face.identity for face in demo.truth.by_key(REFERENCE).faces}
    expected = {s.key: sum(f.identity == person for f in s.faces) for s in demo.faces}
    assert {row["key"]: row["faces"] for row in rows} == {k: n for k, n in expected.items() if n}
    assert max(expected.values()) == 3  # the group photo: every face of the person, not the largest only
    assert [row["similarity"] for row in rows] == sorted((row["similarity"] for row in rows), reverse=True)
    assert all(row["similarity"] >= 80 for row in rows)


def check_images_of_each_person(demo: Demo) -> None:
    rows = demo.query("images_of_each_person", faces=True)
    expected = {
        (person, s.key, sum(f.identity == identity for f in s.faces))
        for person, identity in PEOPLE.items()
        for s in demo.faces
        if any(f.identity == identity for f in s.faces)
    }
    assert {(row["person"], row["key"], row["faces"]) for row in rows} == expected
    assert {row["collection_id"] for row in rows} == {COLLECTION}
    assert all(row["similarity"] >= 80 for row in rows)


def check_same_person_groups(demo: Demo) -> None:
    rows = demo.query("same_person_groups", faces=True)
    people = {f.identity for s in demo.faces for f in s.faces}
    expected = [
        (sum(f.identity == person for s in demo.faces for f in s.faces),
         sorted(s.key for s in demo.faces if any(f.identity == person for f in s.faces)))
        for person in people
    ]  # fmt: skip
    assert sorted((row["faces"], row["keys"]) for row in rows) == sorted(expected)
    assert len(rows) == 2  # the samples' two identities
    assert {row["collection_id"] for row in rows} == {COLLECTION}


CHECKS: dict[str, Callable[[Demo], None]] = {
    name.removeprefix("check_"): check
    for name, check in dict(globals()).items()
    if name.startswith("check_") and callable(check)
}


@pytest.mark.parametrize("name", sorted(path.stem for path in QUERIES.glob("*.sql")))
def test_every_query_returns_the_rows_the_ground_truth_gives(demo: Demo, name: str) -> None:
    assert name in CHECKS, f"docs/queries/{name}.sql has no check in tests/test_queries.py"
    CHECKS[name](demo)


def test_every_check_has_its_query() -> None:
    assert sorted(CHECKS) == sorted(path.stem for path in QUERIES.glob("*.sql"))


def test_every_query_says_what_it_answers() -> None:
    for path in QUERIES.glob("*.sql"):
        assert path.read_text(encoding="utf-8").startswith("-- "), path.name


def test_rekbatch_sql_prints_a_query_file_and_refuses_bad_sql(demo: Demo) -> None:
    def sql(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "batch", "sql", "--output", str(demo.output), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    printed = sql("-f", str(QUERIES / "photos_of_a_celebrity.sql"), "--set", "celebrity=ada lovelace")
    assert printed.returncode == 0, printed.stderr
    celebrity_keys = [s.key for s in demo.first for _ in s.of_kind("celebrity")]
    assert all(key in printed.stdout for key in celebrity_keys)
    assert "│" in printed.stdout  # DuckDB's table rendering

    unset = sql("-f", str(QUERIES / "photos_of_a_celebrity.sql"))
    assert (unset.returncode, unset.stderr) == (
        2,
        "rekbatch: error: the query reads variables nobody set: --set celebrity=VALUE\n",
    )
    broken = sql("-c", "SELECT count(*) FROM labels; SELECT missing_column FROM images")
    assert broken.returncode == 1
    assert broken.stderr.startswith("rekbatch: error: Binder Error:")
    assert broken.stderr.count("\n") == 1
    assert "count_star()" in broken.stdout  # the statements before the bad one ran and printed


# --- the face queries over several runs, their rows built by hand ----------------------------------------

Rows = dict[str, list[dict[str, Any]]]


class Runs:
    """Runs committed one after another into one output, from rows built here rather than by the job:
    what the face queries read after several nightly runs, in a fraction of a second."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.store = RunStore(Destination(str(output)))
        self.committed = 0

    def commit(self, *images: Rows) -> None:
        """One run, an hour after the previous one, holding the rows of these images."""
        self.committed += 1
        run_id = f"run-{self.committed}"
        tables: Rows = {}
        for rows in images:
            for table, table_rows in rows.items():
                tables.setdefault(table, []).extend(
                    {"run_id": run_id, "bucket": "b", **r} for r in table_rows
                )
        commit_rows(self.store, run_id, tables, committed_at=COMMITTED_AT + timedelta(hours=self.committed))

    def query(self, name: str) -> list[dict[str, Any]]:
        return query_rows(self.output, name)


def image_row(key: str, etag: str, *analyses: str) -> dict[str, Any]:
    return {"key": key, "etag": etag, "status": "analysed", "analyses": list(analyses)}


def compared(key: str, etag: str, reference_etag: str, faces: int, matches: dict[int, float]) -> Rows:
    """One image compared with the reference photo's face: its `faces` faces, of which face i matched
    with similarity `matches[i]` (at or above the run's similarity_threshold)."""
    version = {"key": key, "etag": etag}
    reference = {"reference_bucket": "b", "reference_key": REFERENCE, "reference_etag": reference_etag}
    box = {"box_top": 0.1, "box_width": 0.1, "box_height": 0.1}
    return {
        "images": [image_row(key, etag, "compare_faces")],
        "face_comparisons": [
            {**version, **reference, **box, "box_left": i / 10, "similarity": s} for i, s in matches.items()
        ],
        "face_comparison_misses": [
            {**version, **reference, "faces_compared": faces, "faces_unmatched": faces - len(matches)}
        ],
    }


def searched(key: str, etag: str, matches: dict[int, str], indexed: tuple[str, ...] = ()) -> Rows:
    """One image searched in the collection: face i matched the face `matches[i]`. With `indexed` (the
    FaceIds IndexFaces stored for its faces, in order) the image was indexed in the same run and each
    face is searched by its FaceId; else by its crop."""
    version = {"key": key, "etag": etag, "collection_id": COLLECTION}
    analyses = ("index_faces", "face_search") if indexed else ("face_search",)
    return {
        "images": [image_row(key, etag, *analyses)],
        "indexed_faces": [{**version, "face_id": face, "face_index": i} for i, face in enumerate(indexed)],
        "face_matches": [
            {
                **version,
                "face_index": i,
                "searched_by": "face_id" if indexed else "image",
                "searched_face_id": indexed[i] if indexed else None,
                "face_id": matched,
                "similarity": 99.0,
            }
            for i, matched in matches.items()
        ],
    }


def groups(runs: Runs) -> list[tuple[str, int, list[str]]]:
    return [(r["collection_id"], r["faces"], r["keys"]) for r in runs.query("same_person_groups")]


def test_a_replaced_reference_photo_that_matches_nothing_finds_no_image(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.commit(compared("a.jpg", "e1", "ref-1", 1, {0: 99.0}))
    assert keys(runs.query("images_of_reference_person")) == ["a.jpg"]
    runs.commit(compared("a.jpg", "e1", "ref-2", 1, {}))  # a new photo: every image compared again
    assert runs.query("images_of_reference_person") == []  # not the old photo's match


def test_an_image_compared_again_counts_only_its_latest_comparison(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    # similarity_threshold 70, then 90: every image compared again, fewer faces match.
    runs.commit(
        compared("a.jpg", "e1", "ref-1", 2, {0: 75.0, 1: 95.0}),
        compared("b.jpg", "e1", "ref-1", 1, {0: 72.0}),
    )
    runs.commit(compared("a.jpg", "e1", "ref-1", 2, {1: 95.0}), compared("b.jpg", "e1", "ref-1", 1, {}))
    runs.commit(compared("c.jpg", "e1", "ref-1", 1, {0: 91.0}))  # a new image only: a.jpg's stays the latest
    rows = runs.query("images_of_reference_person")
    assert [(r["key"], r["faces"], r["similarity"]) for r in rows] == [("a.jpg", 1, 95.0), ("c.jpg", 1, 91.0)]


def test_same_person_groups_do_not_join_two_people_through_two_versions_of_an_image(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.commit(searched("y.jpg", "e1", {}, ("ada-y",)), searched("z.jpg", "e1", {}, ("bob-z",)))
    runs.commit(searched("x.jpg", "e1", {0: "ada-y"}))  # searched by its crop: Ada
    runs.commit(searched("x.jpg", "e2", {0: "bob-z"}))  # replaced by a photo of Bob
    assert groups(runs) == [(COLLECTION, 2, ["x.jpg", "z.jpg"]), (COLLECTION, 1, ["y.jpg"])]


def test_same_person_groups_drop_the_faces_of_an_older_version(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.commit(searched("w.jpg", "e1", {}, ("ada-w",)), searched("y.jpg", "e1", {0: "ada-w"}, ("ada-y",)))
    # w.jpg replaced by a photo of Bob: its old face is deleted from the collection, y.jpg's match with
    # it joins nothing now.
    runs.commit(searched("w.jpg", "e2", {}, ("bob-w",)), searched("z.jpg", "e1", {0: "bob-w"}, ("bob-z",)))
    assert groups(runs) == [(COLLECTION, 2, ["w.jpg", "z.jpg"]), (COLLECTION, 1, ["y.jpg"])]


def test_same_person_groups_join_faces_through_a_chain_of_matches(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    # d matched c, c matched b, b matched a: one person three matches away, and one alone.
    chain = [searched(key, "e1", {0: prev} if prev else {}, (face,)) for key, face, prev in (
        ("a.jpg", "f-a", ""), ("b.jpg", "f-b", "f-a"), ("c.jpg", "f-c", "f-b"), ("d.jpg", "f-d", "f-c"),
    )]  # fmt: skip
    runs.commit(*chain, searched("e.jpg", "e1", {}, ("f-e",)))
    assert groups(runs) == [
        (COLLECTION, 4, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]),
        (COLLECTION, 1, ["e.jpg"]),
    ]
