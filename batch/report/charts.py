"""The run report's charts: matplotlib figures rendered as SVG, embedded as data URIs.

matplotlib because a Python data team knows it and it needs no JavaScript: each chart is a static SVG
inside an <img>, so the page works offline and makes no request. Text stays text (`svg.fonttype =
none`: smaller files, drawn in the browser's fonts); names are never read as mathtext (`$` in a label
is a dollar sign). Figures are made with `matplotlib.figure.Figure`, not pyplot: no global figure
state, no GUI backend.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from batch.core.timeline import ERROR, OK, THROTTLED, RateSeries

STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "rekognition-batch",  # the same ids in every report: diffable files
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}
#: Longest name shown on a bar chart's axis; the full names are in the tables.
NAME_CHARS = 40
WIDTH_IN = 7.0


@dataclass(frozen=True)
class Chart:
    """One chart: its title (also its alt text) and its SVG."""

    name: str
    title: str
    svg: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg).decode("ascii")


def _render(name: str, title: str, figure: Figure) -> Chart:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return Chart(name, title, buffer.getvalue())


def _figure(height_in: float, rows: int = 1, ratios: Sequence[float] | None = None) -> tuple[Figure, Any]:
    """A figure the report's width with `rows` axes above each other (sharing their x axis)."""
    figure = Figure(figsize=(WIDTH_IN, height_in), layout="constrained")
    axes = figure.subplots(rows, 1, squeeze=False, sharex=True, height_ratios=ratios)[:, 0]
    return figure, axes


@contextmanager
def rendering() -> Iterator[None]:
    """Draw charts inside `with rendering():`: the report's style (rcParams are read when artists are
    made and when saved), and no warning for glyphs a font lacks (a label in a script the fonts don't
    cover is still drawn by the browser: the SVG keeps text as text)."""
    with mpl.rc_context(STYLE), warnings.catch_warnings():  # type: ignore[arg-type]
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        yield


def calls_chart(series: RateSeries, quotas: Mapping[str, float]) -> Chart:
    """Successful calls per second per operation against its quota (dashed), and throttles and errors,
    each a mean over the series' window: a single second's count is not a rate (calls are counted in
    the second they end, and the limiter lets a token's call start a little late), so bars of single
    seconds stood above the quota line of runs that were never throttled."""
    seconds = max(series.window_seconds, series.bucket_seconds)
    title = f"Calls per second by operation (means over {seconds} s), against the quota"
    figure, (ok_axes, bad_axes) = _figure(4.6, rows=2, ratios=(2, 1))
    edges = series.edges
    per = f"\n(mean over {seconds} s)"
    for index, operation in enumerate(series.operations()):
        colour = f"C{index % 10}"
        ok_axes.stairs(series.of(operation, OK), edges, color=colour, label=operation)
        if operation in quotas:
            ok_axes.axhline(quotas[operation], color=colour, linestyle="--", linewidth=1)
        bad_axes.stairs(series.of(operation, THROTTLED), edges, color=colour)
        errors = series.of(operation, ERROR)
        if any(errors):
            bad_axes.stairs(errors, edges, color=colour, linestyle=":")
    ok_axes.set_title(title)
    ok_axes.set_ylabel(f"ok calls/s{per}")
    bad_axes.set_ylabel("throttled/s\n(dotted: errors/s)")
    bad_axes.set_xlabel(
        "seconds since the run started\n(calls counted in the second they ended; only throttles say the "
        "quota was exceeded)"
    )
    bad_axes.xaxis.get_major_locator().set_params(integer=True)
    if series.starts:
        ok_axes.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="dashed: quota", title_fontsize=8
        )
    else:
        ok_axes.text(0.5, 0.5, "no calls", transform=ok_axes.transAxes, ha="center")
    for axes in (ok_axes, bad_axes):
        axes.set_ylim(bottom=0)
    return _render("calls", title, figure)


def bar_chart(name: str, title: str, counts: Sequence[tuple[str, int]], unit: str) -> Chart:
    """Horizontal bars, largest on top: e.g. images per label."""
    figure, (axes,) = _figure(0.6 + 0.22 * max(len(counts), 1))
    labels = [_short(label) for label, _ in counts][::-1]
    axes.barh(range(len(counts)), [n for _, n in counts][::-1], color="C0")
    axes.set_yticks(range(len(counts)), labels)
    axes.set_xlabel(unit)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_title(title)
    _empty_note(axes, not counts)
    return _render(name, title, figure)


def faces_chart(histogram: Mapping[int, int]) -> Chart:
    title = "Faces per image"
    figure, (axes,) = _figure(2.6)
    axes.bar(list(histogram), list(histogram.values()), color="C3")
    axes.set_xlabel("faces in the image")
    axes.set_ylabel("images")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_title(title)
    _empty_note(axes, not histogram)
    return _render("faces_per_image", title, figure)


def confidence_chart(histograms: Mapping[str, np.ndarray], bins: np.ndarray) -> Chart:
    """One small histogram per table, side by side."""
    title = "Confidence (%) by table"
    names = sorted(histograms)
    figure = Figure(figsize=(WIDTH_IN, 2.2), layout="constrained")
    grid = figure.subplots(1, max(len(names), 1), squeeze=False, sharey=False)[0]
    for axes, table in zip(grid, names, strict=False):
        axes.stairs(histograms[table], bins, fill=True, color="C2")
        axes.set_title(table, fontsize=9)
        axes.set_xlim(bins[0], bins[-1])
    figure.suptitle(title, fontsize=10, fontweight="bold")
    _empty_note(grid[0], not names)
    return _render("confidence", title, figure)


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def _empty_note(axes: Axes, empty: bool) -> None:
    if empty:
        axes.text(0.5, 0.5, "no rows", transform=axes.transAxes, ha="center", va="center")
