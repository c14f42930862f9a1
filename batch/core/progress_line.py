"""The run's progress as one line of at most a given width: detail is dropped before the line would
wrap, and a line that still does not fit is cut. Pure; ASCII only (a terminal in the C locale)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["OperationRate", "ProgressView", "fit", "progress_line"]


@dataclass(frozen=True)
class OperationRate:
    """One operation's attempts per second over the recent window, and its quota (0: none known)."""

    operation: str
    rate: float
    quota: float = 0.0


@dataclass(frozen=True)
class ProgressView:
    """What the progress line shows: images done of those listed so far, or of the `total` once the
    listing has ended; rejected and failed images apart; each operation's recent rate; throttled
    attempts; the seconds left at the recent pace (None: unknown) and the seconds since the start."""

    done: int
    listed: int
    total: int | None
    rejected: int
    failed: int
    rates: tuple[OperationRate, ...]
    throttled: int
    eta: float | None
    elapsed: float


@dataclass(frozen=True)
class _Detail:
    elapsed: bool = True
    percent: bool = True
    quotas: bool = True
    #: Operations shown by name (the others are summed into the total); None: all, without a total.
    operations: int | None = None
    eta: bool = True
    throttled: bool = True
    long_words: bool = True


def progress_line(view: ProgressView, width: int) -> str:
    """The most detailed rendering of `view` that fits in `width` columns, else the least detailed one
    cut to `width`. Detail goes in this order: elapsed time, percentage, quotas, a zero throttle count,
    operations by name (their sum stays), the ETA, then long words."""
    line = ""
    for detail in _details(len(view.rates)):
        line = _render(view, detail)
        if len(line) <= width:
            return line
    return fit(line, width)


def fit(text: str, width: int) -> str:
    """`text` cut to `width` columns, ending with ``...`` when cut (a terminal line never wraps)."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[: max(width, 0)]
    return text[: width - 3] + "..."


def _details(operations: int) -> Iterator[_Detail]:
    detail = _Detail()
    yield detail
    for change in ({"elapsed": False}, {"percent": False}, {"quotas": False}, {"throttled": False}):
        detail = dataclasses.replace(detail, **change)
        yield detail
    for shown in range(operations - 1, -1, -1):
        detail = dataclasses.replace(detail, operations=shown)
        yield detail
    for change in ({"eta": False}, {"long_words": False}):
        detail = dataclasses.replace(detail, **change)
        yield detail


def _render(view: ProgressView, detail: _Detail) -> str:
    parts = [_images(view, detail), _calls(view, detail)]
    if detail.throttled or view.throttled:
        parts.append(f"{view.throttled} throttled" if detail.long_words else f"{view.throttled} thr")
    if detail.eta and view.eta is not None:
        parts.append(f"ETA {_clock(view.eta)}")
    line = " | ".join(part for part in parts if part)
    return f"[{_clock(view.elapsed)}] {line}" if detail.elapsed else line


def _images(view: ProgressView, detail: _Detail) -> str:
    of = f"{view.listed}+" if view.total is None else str(view.total)  # +: the listing goes on
    text = f"{view.done}/{of} images" if detail.long_words else f"{view.done}/{of}"
    if detail.percent and view.total:
        text += f" {100 * view.done // view.total}%"
    if detail.long_words:
        return f"{text}, {view.rejected} rejected, {view.failed} failed"
    return f"{text}, {view.rejected} rej, {view.failed} fail"


def _calls(view: ProgressView, detail: _Detail) -> str:
    if not view.rates:
        return ""
    label = "calls/s" if detail.long_words else "c/s"
    if detail.operations is None:
        return f"{label} " + " ".join(_rate(r.operation, r.rate, r.quota, detail.quotas) for r in view.rates)
    total = _rate("", sum(r.rate for r in view.rates), sum(r.quota for r in view.rates), quotas=True)
    shown = view.rates[: detail.operations]
    if not shown:
        return f"{label} {total}"
    named = " ".join(_rate(r.operation, r.rate, 0.0, quotas=False) for r in shown)
    return f"{label} {total}: {named} +{len(view.rates) - len(shown)} more"


def _rate(name: str, rate: float, quota: float, quotas: bool) -> str:
    text = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
    if quotas and quota:
        text += f"/{quota:g}"
    return f"{name} {text}" if name else text


def _clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
