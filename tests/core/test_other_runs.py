"""batch.core.other_runs: which other runs of the output a run's start names, and the line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batch.core.manifest import LIVE_SECONDS
from batch.core.other_runs import OtherRun, inputs_overlap, warnings

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
INPUT = "s3://bucket/in/"
RESUME = {
    r: f"rekbatch run --config c.toml --resume {r}" for r in ("live", "stopped", "idle", "migrate-ab-1")
}
JUST_NOW, LONG_AGO = NOW - timedelta(seconds=5), NOW - timedelta(seconds=LIVE_SECONDS + 1)


def test_a_live_run_is_named_with_what_it_has_not_committed() -> None:
    (line,) = warnings([OtherRun("live", INPUT, "d", JUST_NOW, 24, holds_work=False)], INPUT, NOW, RESUME)
    assert line == (
        "rekbatch: warning: run live is running on this output (24 images done, not committed): images it "
        "has not committed are analysed again by this run, unless another run committed them"
    )
    (line,) = warnings([OtherRun("live", "", "d", JUST_NOW, 0, holds_work=False)], INPUT, NOW, RESUME)
    assert "run live is running on this output (not committed)" in line  # just started: nothing done yet


def test_a_stopped_run_is_named_only_with_work_and_with_the_command_that_finishes_it() -> None:
    stopped = OtherRun("stopped", INPUT, "d", LONG_AGO, 8, holds_work=True)
    idle = OtherRun("idle", INPUT, "d", None, 0, holds_work=False)  # e.g. stopped at the listing
    (line,) = warnings([idle, stopped], INPUT, NOW, RESUME)
    assert line == (
        "rekbatch: warning: run stopped stopped on this output with images analysed and not committed: "
        "this run analyses (and pays for) them again, unless another run committed them; finish it before "
        "the next run with: "
        "rekbatch run --config c.toml --resume stopped"
    )


def test_runs_over_another_input_and_migrations_are_not_named() -> None:
    others = [
        OtherRun("live", "s3://bucket/other/", "d", JUST_NOW, 3, holds_work=False),
        OtherRun("stopped", "s3://elsewhere/in/", "d", LONG_AGO, 3, holds_work=True),
        OtherRun("migrate-ab-1", INPUT, "d", JUST_NOW, 3, holds_work=True),
    ]
    assert warnings(others, INPUT, NOW, RESUME) == []
    assert warnings(others[:1], "s3://bucket/", NOW, RESUME) != []  # the whole bucket holds its prefix


def test_inputs_overlap_when_one_prefix_holds_the_other_or_one_is_unknown() -> None:
    assert inputs_overlap("s3://b/in/", "s3://b/in/2026/")
    assert inputs_overlap("s3://b/in/2026/", "s3://b/in/")
    assert inputs_overlap("", "s3://b/in/")
    assert not inputs_overlap("s3://b/in/", "s3://b/out/")
