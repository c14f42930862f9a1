"""The queries docs/tables.md shows inline, run over committed rows that exercise what they promise."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import commit_rows

from batch.query import views
from batch.storage.commits import RunStore
from batch.storage.sink import Destination

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
REFERENCE = "people/reference/ada.jpg"


def documented_query(after: str) -> str:
    """The first ```sql block of docs/tables.md after the sentence starting with `after`."""
    text = DOCS.read_text()
    found = re.search(r"```sql\n(.*?)```", text[text.index(after) :], re.S)
    assert found is not None
    return found.group(1)


def face(key: str, face_id: str) -> dict[str, object]:
    return {"run_id": "r1", "bucket": "b", "key": key, "etag": "e", "face_id": face_id, "collection_id": "c"}


def match(searched_key: str, face_id: str, matched_key: str | None, similarity: float) -> dict[str, object]:
    row = {"run_id": "r1", "bucket": "b", "key": searched_key, "etag": "e", "collection_id": "c"}
    return {**row, "face_id": face_id, "matched_key": matched_key, "similarity": similarity}


def test_every_image_of_the_reference_person_is_found_whichever_way_its_pair_was_recorded(
    tmp_path: Path,
) -> None:
    """Indexed in one run, images search each other: a face searched before the reference was
    indexed finds nothing, and only the reference's own search records that pair."""
    rows = {
        "indexed_faces": [face(REFERENCE, "f-ada"), face("a.jpg", "f-a"), face("b.jpg", "f-b")],
        "face_matches": [
            match("a.jpg", "f-ada", REFERENCE, 97.0),  # a.jpg's face matched the reference's face
            match(REFERENCE, "f-b", "b.jpg", 95.0),  # only the reference's search found b.jpg
            match("c.jpg", "f-other", "d.jpg", 99.0),  # another person
        ],
    }
    commit_rows(RunStore(Destination(str(tmp_path))), "r1", rows)
    with views.connect(str(tmp_path)) as sql:
        found = sql.execute(documented_query("Every image of the person in this reference photo")).fetchall()
    assert found == [("a.jpg", 97.0), ("b.jpg", 95.0)]
