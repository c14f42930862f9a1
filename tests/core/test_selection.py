from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from batch.config.model import InputConfig
from batch.core.selection import ListedObject, batched, is_selected

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def obj(key: str, size: int = 100) -> ListedObject:
    return ListedObject(key, "etag", size, NOW)


def test_selects_image_names_in_any_case_and_nothing_else() -> None:
    images = ["p/a.jpg", "p/b.JPEG", "p/c.Png", "p/d.webp", "p/e.gif", "p/f.TIF", "p/g.tiff", "p/h.bmp"]
    others = ["p/f.jpg.txt", "p/folder/", "p/g", "p/h.heic", "p/i.pdf"]
    chosen = [k for k in images + others if is_selected(obj(k), "p/", InputConfig())]
    assert chosen == images


def test_keys_outside_the_prefix_are_never_selected() -> None:
    assert not is_selected(obj("photos-archive/a.jpg"), "photos/", InputConfig())
    assert not is_selected(obj("other/a.jpg"), "photos/", InputConfig())


def test_include_and_exclude_globs_apply_to_the_key_relative_to_the_prefix() -> None:
    config = InputConfig(include=("2026/*",), exclude=("*/thumbs/*",))
    assert is_selected(obj("p/2026/a.jpg"), "p/", config)
    assert not is_selected(obj("p/2025/a.jpg"), "p/", config)
    assert not is_selected(obj("p/2026/thumbs/a.jpg"), "p/", config)


def test_zero_byte_images_are_selected_so_that_they_get_a_row() -> None:
    assert is_selected(obj("p/empty.jpg", size=0), "p/", InputConfig())


@given(st.integers(0, 120), st.integers(1, 25), st.integers(0, 150))
def test_batched_keeps_order_and_limit(n: int, size: int, limit: int) -> None:
    objects = [obj(f"p/{i}.jpg") for i in range(n)]
    batches = list(batched(iter(objects), size, limit))
    flat = [o for b in batches for o in b]
    assert flat == objects[: limit or n]
    assert all(1 <= len(b) <= size for b in batches)


def test_batched_pulls_the_stream_lazily() -> None:
    pulled = []

    def stream():
        for i in range(10_000):
            pulled.append(i)
            yield obj(f"p/{i}.jpg")

    first = next(batched(stream(), 10))
    assert len(first) == 10
    assert len(pulled) == 10


def test_batch_size_may_change_between_batches() -> None:
    sizes = iter([2, 3, 5, 5])
    batches = list(batched((obj(f"p/{i}.jpg") for i in range(10)), lambda: next(sizes)))
    assert [len(b) for b in batches] == [2, 3, 5]
