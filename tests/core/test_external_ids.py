"""Key <-> ExternalImageId (`batch.core.external_ids`) and the pure part of collection sync
(`batch.faces.sync.Reconciliation`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.external_ids import external_image_id, is_digest_id, is_external_image_id, key_of
from batch.faces.sync import Reconciliation, StoredFace, chunks, owned

#: S3 keys: any Unicode text without surrogates, 1 to 1,024 bytes of UTF-8.
keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=400).filter(
    lambda k: len(k.encode()) <= 1024
)


@given(keys)
def test_every_key_gets_an_id_rekognition_accepts(key: str) -> None:
    assert is_external_image_id(external_image_id(key))


@given(keys)
def test_an_escaped_id_decodes_to_its_key_and_a_long_key_gets_a_digest(key: str) -> None:
    external = external_image_id(key)
    if is_digest_id(external):
        assert key_of(external) is None
        assert len(external) == 73
    else:
        assert key_of(external) == key


@given(keys, keys)
def test_different_keys_never_share_an_id(a: str, b: str) -> None:
    if a != b:
        assert external_image_id(a) != external_image_id(b)


@pytest.mark.parametrize(
    ("key", "external"),
    [
        ("photos/a b.jpg", "photos:2Fa:20b.jpg"),
        ("x=1+2:3", "x:3D1:2B2:3A3"),
        ("café", "caf:C3:A9"),
        ("plain-name_1.jpg", "plain-name_1.jpg"),
    ],
)
def test_known_escapes(key: str, external: str) -> None:
    assert external_image_id(key) == external
    assert key_of(external) == key


def test_a_1024_byte_key_and_ids_the_module_did_not_make() -> None:
    key = "p/" + "é" * 511  # 1,024 bytes
    assert is_digest_id(external_image_id(key))
    assert key_of(":41") is None  # an escaped "A": not the canonical form
    assert key_of("a:zz") is None
    assert key_of(":FF") is None  # not UTF-8


def test_reconciliation_splits_orphans_from_known_faces_of_the_prefix() -> None:
    long_key = "p/" + "x" * 300
    faces = [
        StoredFace("f1", external_image_id("p/a.jpg")),
        StoredFace("f2", external_image_id("p/a.jpg")),  # unknown: an orphan of a crash
        StoredFace("f3", external_image_id("q/other.jpg")),  # another prefix: not ours
        StoredFace("f4", "made-by-someone-else:1"),  # does not decode: not ours
        StoredFace("f5", None),
        StoredFace("f6", external_image_id(long_key)),
        StoredFace("f7", external_image_id("p/gone.jpg")),
    ]
    plan = Reconciliation.plan(faces, {"f1", "f3", "f6", "f7"}, "p/", {external_image_id(long_key): long_key})
    assert plan.orphans == ["f2"]
    plan.listed("p/a.jpg")
    plan.listed(long_key)
    assert plan.take(["p/a.jpg", "p/new.jpg"]) == ["f1"]  # re-indexed: its old faces go first
    assert plan.take(["p/a.jpg"]) == []  # never twice
    assert plan.unlisted() == ["f7"]  # pruned; the listed long key keeps f6


def test_owned_needs_a_key_under_the_prefix() -> None:
    assert owned(external_image_id("p/x.jpg"), "p/", {})
    assert not owned(external_image_id("px.jpg"), "p/", {})
    assert owned(external_image_id("p/" + "x" * 300), "p/", {})  # a digest no row knows: ours, orphaned
    assert not owned(None, "", {})


def test_chunks_respect_the_delete_faces_limit() -> None:
    ids = [str(n) for n in range(9000)]
    assert [len(c) for c in chunks(ids)] == [4096, 4096, 808]
    assert [x for c in chunks(ids) for x in c] == ids
