"""batch.collections.StorageForecast: what a dry run says a run would do to the collection (pure)."""

from __future__ import annotations

from collections import Counter

from batch.collections import StorageForecast


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
