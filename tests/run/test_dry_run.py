"""The dry run's count (`batch.run.dry_run`) and its text: bounds unless the headers were probed."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

from batch.core.image_checks import Refusal
from batch.core.selection import ListedObject
from batch.run.context import ImageToAnalyse
from batch.run.dry_run import probed
from batch.run.summary import RunSummary
from batch.run.text import format_summary

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def dry_summary(kind: str, analyses: tuple[str, ...] = ("labels",)) -> RunSummary:
    summary = RunSummary("r", "s3://b/p/", "", analyses, "d", "", NOW, status="dry-run", dry_run=kind)
    summary.images.update({"listed": 10, "to_analyse": 7, "skipped": 1, "rejected": 2})
    summary.refused.update({"EmptyObject": 1, "InvalidImageFormatException": 2})
    summary.add_planned("DetectLabels", 7, 0.007)
    return summary


def test_a_dry_run_that_read_no_header_says_at_most() -> None:
    lines = format_summary(dry_summary("bound"), dry_run=True).splitlines()
    assert "at most 7 to analyse (headers not read: --probe reads them for the exact count)" in lines[0]
    assert lines[1:] == [
        "  would call DetectLabels at most 7 times",
        "  estimated cost of the image calls at list price: at most $0.0070 (called nothing)",
    ]


def test_a_probed_dry_run_gives_the_exact_count_and_the_refused_by_reason() -> None:
    lines = format_summary(dry_summary("probed"), dry_run=True).splitlines()
    assert lines[0] == (
        "dry run over s3://b/p/ (headers probed): 10 images listed, 7 to send, 0 unchanged since a "
        "committed run, 3 not sent (EmptyObject 1, InvalidImageFormatException 2)"
    )
    assert lines[1:3] == [
        "  would call DetectLabels 7 times",
        "  estimated cost of the image calls at list price: $0.0070 (called nothing)",
    ]
    assert lines[3].startswith("  Rekognition may still refuse an image damaged past its header")


def test_calls_per_face_stay_at_least_in_both_kinds() -> None:
    for kind, images in (("bound", "; at most, for the images"), ("probed", "")):
        summary = dry_summary(kind, ("compare_faces",))
        summary.add_planned("CompareFaces", 14, 0.014)
        text = format_summary(summary, dry_run=True)
        assert "would call CompareFaces at least 14 times" in text
        assert f"$0.0210 (at least, for the calls per face{images})" in text


def test_the_summary_json_says_which_kind_of_dry_run() -> None:
    assert dry_summary("probed").as_json()["dry_run"] == {
        "kind": "probed",
        "refused": {"EmptyObject": 1, "InvalidImageFormatException": 2},
    }
    run = RunSummary("r", "s3://b/p/", "out", ("labels",), "d", "", NOW)
    assert run.as_json()["dry_run"] is None


def test_probed_keeps_the_order_probes_each_image_once_and_on_several_threads() -> None:
    images = [ImageToAnalyse(ListedObject(f"k{i}.jpg", "e", i, NOW), ("labels",), {}) for i in range(100)]
    seen: Counter[str] = Counter()
    threads: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def probe(obj: ListedObject) -> Refusal | None:
        with lock:
            seen[obj.key] += 1
            threads.add(threading.get_ident())
        if obj.size < 4:  # the first four wait for each other: they must be probed at once
            barrier.wait(timeout=30)
        return Refusal("rejected", "X", "odd") if obj.size % 2 else None

    out = list(probed(iter(images), probe, 4))
    assert [image for image, _ in out] == images
    assert [refusal is not None for _, refusal in out] == [i % 2 == 1 for i in range(100)]
    assert set(seen.values()) == {1}
    assert len(seen) == 100
    assert len(threads) == 4


def test_probe_without_dry_run_is_refused_at_load() -> None:
    import pytest

    from batch.config.loader import load_config
    from batch.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^run\.probe: only with run\.dry_run \(--dry-run --probe\)"):
        load_config(
            environ={}, overrides={"run.input": "s3://bucket-a/p/", "run.output": "o", "run.probe": True}
        )
