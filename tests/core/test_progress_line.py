"""batch.core.progress_line: the progress line fits any width, dropping detail before cutting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from batch.core.progress_line import OperationRate, ProgressView, fit, progress_line

OPERATIONS = ("DetectLabels", "DetectFaces", "DetectText", "DetectModerationLabels", "RecognizeCelebrities")


def view(operations: tuple[str, ...] = OPERATIONS, **changes: object) -> ProgressView:
    fields: dict[str, object] = {
        "done": 120,
        "listed": 300,
        "total": 333,
        "rejected": 2,
        "failed": 1,
        "rates": tuple(OperationRate(op, 4.9, 5.0) for op in operations),
        "throttled": 3,
        "eta": 45.0,
        "elapsed": 62.0,
    }
    fields.update(changes)
    return ProgressView(**fields)  # type: ignore[arg-type]


def test_a_wide_terminal_shows_everything_with_the_api_names() -> None:
    assert progress_line(view(), 200) == (
        "[1:02] 120/333 images 36%, 2 rejected, 1 failed | calls/s DetectLabels 4.9/5 DetectFaces 4.9/5 "
        "DetectText 4.9/5 DetectModerationLabels 4.9/5 RecognizeCelebrities 4.9/5 | 3 throttled | ETA 0:45"
    )


def test_detail_goes_before_the_line_would_wrap() -> None:
    assert progress_line(view(), 120) == (
        "120/333 images, 2 rejected, 1 failed | calls/s 24/25: DetectLabels 4.9 DetectFaces 4.9 +3 more "
        "| 3 throttled | ETA 0:45"
    )
    assert (
        progress_line(view(), 80)
        == "120/333 images, 2 rejected, 1 failed | calls/s 24/25 | 3 throttled | ETA 0:45"
    )
    assert progress_line(view(), 60) == "120/333, 2 rej, 1 fail | c/s 24/25 | 3 thr"
    assert progress_line(view(), 40) == "120/333, 2 rej, 1 fail | c/s 24/25 | ..."


def test_one_operation_keeps_its_name_on_80_columns() -> None:
    line = progress_line(view(("DetectLabels",), throttled=0, done=1200, listed=3000, total=3333), 80)
    assert line == "1200/3333 images, 2 rejected, 1 failed | calls/s DetectLabels 4.9 | ETA 0:45"


def test_while_the_listing_goes_on_the_images_listed_so_far_end_with_a_plus() -> None:
    line = progress_line(view(("DetectLabels",), total=None, eta=None), 200)
    assert line == "[1:02] 120/300+ images, 2 rejected, 1 failed | calls/s DetectLabels 4.9/5 | 3 throttled"


def test_hours_and_big_rates() -> None:
    line = progress_line(
        view(("DetectLabels",), rates=(OperationRate("DetectLabels", 49.6, 50),), eta=3725.0), 200
    )
    assert line.endswith("calls/s DetectLabels 50/50 | 3 throttled | ETA 1:02:05")


operation_names = st.lists(st.sampled_from(OPERATIONS), unique=True, max_size=5).map(tuple)
views = st.builds(
    lambda ops, done, listed, total, bad, rate, throttled, eta, elapsed: view(
        ops,
        done=done,
        listed=listed,
        total=total,
        rejected=bad,
        failed=bad,
        rates=tuple(OperationRate(op, rate, 50.0) for op in ops),
        throttled=throttled,
        eta=eta,
        elapsed=elapsed,
    ),
    operation_names,
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.none() | st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.floats(0, 10**5, allow_nan=False),
    st.integers(0, 10**7),
    st.none() | st.floats(0, 10**7, allow_nan=False),
    st.floats(0, 10**6, allow_nan=False),
)


@given(views, st.integers(0, 300))
def test_every_line_fits_its_width_in_ascii(shown: ProgressView, width: int) -> None:
    line = progress_line(shown, width)
    assert len(line) <= width
    assert line.isascii()
    assert line.isprintable()


def test_fit_cuts_with_dots() -> None:
    assert fit("Dask dashboard: http://127.0.0.1:8787/status", 20) == "Dask dashboard: h..."
    assert fit("short", 20) == "short"
    assert fit("abcdef", 2) == "ab"
