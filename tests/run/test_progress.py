"""batch.run.progress without a cluster: the worker's feed, and the driver's view of the events."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from batch.run.progress import Progress, ProgressFeed, progress_topic, terminal_line
from batch.run.summary import RunSummary

TOPIC = progress_topic("run/1")
QUOTAS = {"DetectLabels": 5.0, "DetectFaces": 5.0}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Subscriptions:
    """What `Progress` asks of a Dask client: the topics it subscribes to."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def subscribe_topic(self, topic: str, handler: Any) -> None:
        self.handlers[topic] = handler

    def unsubscribe_topic(self, topic: str) -> None:
        del self.handlers[topic]


@dataclass
class Listing:
    total: int | None = None


@dataclass
class Batch:
    index: int


def summary(**images: int) -> RunSummary:
    made = RunSummary(
        "run", "s3://b/p/", "out", ("labels", "faces"), "d", "", datetime(2026, 1, 1, tzinfo=UTC)
    )
    made.images.update(images)
    return made


def test_a_feed_sends_what_changed_per_topic_at_each_flush() -> None:
    sent: list[tuple[str, Any]] = []
    feed = ProgressFeed(lambda topic, message: sent.append((topic, message)))
    for outcome in ("ok", "ok", "ThrottlingException"):
        feed.call(TOPIC, "DetectLabels", outcome)
    feed.image(TOPIC, 3, "analysed")
    feed.image(TOPIC, 3, "rejected")
    feed.flush()
    assert sent == [
        (
            TOPIC,
            {
                "calls": [["DetectLabels", "ok", 2], ["DetectLabels", "ThrottlingException", 1]],
                "images": [[3, [("analysed", 1), ("rejected", 1)]]],
            },
        )
    ]
    feed.flush()
    assert len(sent) == 1  # nothing changed: nothing sent
    feed.image(TOPIC, 3, "analysed")
    feed.flush()
    assert sent[-1] == (TOPIC, {"calls": [], "images": [[3, [("analysed", 2), ("rejected", 1)]]]})  # whole
    feed.forget(TOPIC, 3)
    feed.call("other", "DetectFaces", "ok")
    feed.flush()
    assert sent[-1] == ("other", {"calls": [["DetectFaces", "ok", 1]], "images": []})


def test_the_view_adds_the_events_of_batches_not_accounted_to_the_summary() -> None:
    now = [100.0]
    listing = Listing()
    counts = summary(listed=20, analysed=4, unchanged=2)
    progress = Progress(
        Subscriptions(), "run/1", QUOTAS, listing, counts, stream=io.StringIO(), clock=lambda: now[0]
    )
    now[0] = 102.0
    progress.on_event((0.0, {"calls": [["DetectLabels", "ok", 8], ["DetectFaces", "ThrottlingException", 2]],
                             "images": [[7, [["analysed", 3], ["failed", 1]]]]}))  # fmt: skip
    progress.on_event((0.0, {"calls": [], "images": [[8, [["rejected", 2]]]]}))
    progress.on_event((0.0, {"calls": [], "images": [[7, [["analysed", 4], ["failed", 1]]]]}))  # replaces
    view = progress.view(102.0)
    assert (view.done, view.listed, view.total, view.rejected, view.failed) == (13, 20, None, 2, 1)
    assert [(r.operation, r.quota) for r in view.rates] == [("DetectLabels", 5.0), ("DetectFaces", 5.0)]
    assert view.rates[0].rate == pytest.approx(8 / 1.0)  # one event covers the last FLUSH_SECONDS
    assert view.throttled == 2

    progress._account(Batch(7))  # the loop took batch 7's record: its images come from the summary
    progress.on_event((0.0, {"calls": [], "images": [[7, [["analysed", 5]]]]}))  # late: ignored
    listing.total = 20
    view = progress.view(103.0)
    assert (view.done, view.total, view.rejected, view.failed) == (8, 20, 2, 0)


def test_a_terminal_sees_one_fitted_line_a_log_record_clears_and_the_last_state_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    stream = Terminal()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.progress")
    log.addHandler(handler)
    client = Subscriptions()
    progress = Progress(client, "run/1", QUOTAS, Listing(40), summary(listed=40, analysed=10), stream=stream)

    def loop() -> None:
        for _ in progress.during(iter([(Batch(1),)])):
            assert list(client.handlers) == [TOPIC]
            progress.redraw()
            log.warning("a warning")
            raise RuntimeError("loop failed")

    try:
        with pytest.raises(RuntimeError, match="loop failed"):
            loop()
    finally:
        log.removeHandler(handler)
    written = stream.getvalue()
    assert written == (
        "\r10/40, 0 rej, 0 fail | c/s 0.0/10\x1b[K"
        "\r\x1b[Ka warning\n"
        "\r10/40, 0 rej, 0 fail | c/s 0.0/10\x1b[K\n"
    )
    assert client.handlers == {}  # unsubscribed
    assert not any(t.name == "rekbatch-progress" for t in threading.enumerate())
    assert handler.formatter is None  # the handler's own formatter is back


def test_not_a_terminal_and_not_verbose_shows_nothing_and_subscribes_to_nothing() -> None:
    client = Subscriptions()
    stream = io.StringIO()
    progress = Progress(client, "run/1", QUOTAS, Listing(), summary(), stream=stream)

    def results() -> Iterator[tuple[Batch]]:
        yield (Batch(1),)
        assert client.handlers == {}

    assert list(progress.during(results())) == [(Batch(1),)]
    assert stream.getvalue() == ""
    assert terminal_line("x" * 300, stream) == "x" * 300  # a log file keeps whole lines


def test_a_terminal_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    line = terminal_line(
        "Dask dashboard: not served (pip install 'rekognition-batch[dashboard]')", Terminal()
    )
    assert line == "Dask dashboard: not served (pip inst..."
