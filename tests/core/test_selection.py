from __future__ import annotations

from datetime import UTC, datetime

from batch.config.model import InputConfig
from batch.core.selection import ListedObject, is_selected

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
