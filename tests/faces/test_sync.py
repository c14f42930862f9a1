"""batch.faces.sync: what a dry run says a run would do to the collection (StorageForecast), and which
images the collection lost (KnownFaces). Pure."""

from __future__ import annotations

from collections import Counter

import pytest

from batch.analyses import index_faces
from batch.analyses.base import DriverSetup
from batch.config.model import RunConfig
from batch.core.incremental import CommittedState
from batch.faces.sync import CollectionHooks, KnownFaces, StorageForecast


def test_a_missing_collection_would_be_created_and_nothing_deleted() -> None:
    forecast = StorageForecast(exists=False)
    forecast.to_index(0, sent=True)
    forecast.to_index(0, sent=False)  # a zero-byte image: no IndexFaces
    # The first DescribeCollection fails (ResourceNotFoundException): not a call a run prices.
    assert forecast.calls() == Counter({"DescribeCollection": 1, "CreateCollection": 1, "ListFaces": 1})
    assert (forecast.deleted, forecast.images_to_index, forecast.faces_after) == (0, 1, 1)


def test_deletions_add_up_and_deletefaces_calls_are_bounded_per_image_and_per_4096() -> None:
    forecast = StorageForecast(
        exists=True, faces_before=9000, list_faces_pages=3, orphans=4097, faces_per_image=2.5
    )
    forecast.to_index(3, sent=True)  # a changed image: its 3 faces go first
    forecast.to_index(0, sent=True)  # a new image
    forecast.to_index(2, sent=False)  # changed, now zero bytes: its faces go, nothing is indexed
    forecast.pruned = 10
    assert (forecast.replaced, forecast.replaced_images, forecast.deleted) == (5, 2, 4112)
    assert forecast.calls() == Counter({"DescribeCollection": 2, "ListFaces": 3, "DeleteFaces": 2 + 2 + 1})
    assert forecast.faces_after == 9000 - 4112 + 5  # two images indexed at 2.5 faces each


def test_only_the_last_indexing_of_an_image_counts_and_lost_faces_mark_it() -> None:
    known = KnownFaces()
    known.add("run-1", "p/a.jpg", "e1", "old-1", "p:2Fa.jpg")  # indexed, then indexed again with --full
    known.add("run-1", "p/a.jpg", "e1", "old-2", "p:2Fa.jpg")
    known.add("run-2", "p/a.jpg", "e1", "new-1", "p:2Fa.jpg")
    known.add("run-1", "p/b.jpg", "e1", "b-1", "p:2Fb.jpg")
    known.add("run-1", "p/b.jpg", "e0", "b-0", "p:2Fb.jpg")  # an older ETag, its faces deleted since
    known.add("run-1", "q/c.jpg", "e1", "c-1", "q:2Fc.jpg")  # another prefix
    assert known.ids == {"old-1", "old-2", "new-1", "b-1", "b-0", "c-1"}
    assert known.latest[("p/a.jpg", "e1")] == {"new-1"}
    # Lost, but harmless: no listed object has that ETag, so nothing is indexed for it.
    assert known.lost({"new-1", "b-1"}, "p/") == {("p/b.jpg", "e0")}
    assert known.lost({"new-1"}, "p/") == {("p/b.jpg", "e1"), ("p/b.jpg", "e0")}
    assert known.lost((), "q/") == {("q/c.jpg", "e1")}  # the collection deleted: all of them


def test_an_unsettled_analysis_is_needed_again_and_only_it() -> None:
    state = CommittedState()
    state.add("p/a.jpg", "e1", [("labels", "d1"), ("index_faces", "d2")])
    wanted = {"labels": "d1", "index_faces": "d2"}
    assert state.needed("p/a.jpg", "e1", wanted) == ()
    state.unsettle("p/a.jpg", "e1", "index_faces")
    assert state.needed("p/a.jpg", "e1", wanted) == ("index_faces",)
    state.unsettle("p/new.jpg", "e1", "index_faces")  # never settled: nothing to forget
    assert state.needed("p/new.jpg", "e1", wanted) == ("labels", "index_faces")


def test_the_collection_sync_calls_at_the_quotas_the_run_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's collection calls are held to the quotas the run resolved (read from Service Quotas
    when unset), not to `rekognition.tps`'s default: IndexFaces at 3 here; the others at the default."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    setup = DriverSetup(RunConfig(), index_faces.Settings(collection="people"), s3=None, store=None,
                        dry_run=False, quotas={"IndexFaces": 3.0})  # fmt: skip
    limiter = CollectionHooks(setup).sync.caller._limiter
    assert limiter._rates == {"IndexFaces": 3.0}
    assert limiter._rate == RunConfig().quota("index_faces")
