"""Other runs of the same output that have not committed: a run started beside one of them plans only
from committed manifests, so it analyses again (and pays again for) every image the other run analysed
and has not committed yet. The start names each such run on stderr, before any billed call (one line
each, `warnings`); the I/O is `batch.run.others`. Pure: no I/O. See docs/operations.md, "Runs side by
side".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from batch.core.manifest import LIVE_SECONDS

__all__ = ["OtherRun", "inputs_overlap", "is_live", "warnings"]

#: `rekbatch collection migrate` names its runs so (`batch.cli.migrate`): it calls IndexFaces into its
#: target collection, which a run does not repeat, and a second invocation of it continues it by itself.
MIGRATION_PREFIX = "migrate-"


@dataclass(frozen=True)
class OtherRun:
    """What the start reads of another run with control files under the output and no final manifest."""

    run_id: str
    #: Its first attempt's input and config digest (`AttemptRecord`); "" when that record is gone.
    input: str
    config_digest: str
    #: When its newest heartbeat file was written (the storage's clock); None without one.
    last_beat: datetime | None
    #: Images of its complete batches not committed yet, as its newest heartbeat says (0: none or unknown).
    uncommitted: int
    #: It holds a batch or image record: analysed images its `--resume` keeps (read only when not live).
    holds_work: bool


def inputs_overlap(a: str, b: str) -> bool:
    """Whether two input prefixes (`s3://bucket/prefix/`) can list the same object; True when one is
    unknown ("")."""
    return not a or not b or a.startswith(b) or b.startswith(a)


def is_live(run: OtherRun, now: datetime) -> bool:
    """A heartbeat within `LIVE_SECONDS` (as gc decides): an attempt of the run is running."""
    return run.last_beat is not None and run.last_beat >= now - timedelta(seconds=LIVE_SECONDS)


def warnings(others: list[OtherRun], own_input: str, now: datetime, resume: dict[str, str]) -> list[str]:
    """One `rekbatch: warning:` line per run of `others` whose images this run would analyse again: a
    live one (it has or will have images done that it has not committed), and a stopped one that holds
    analysed work (`resume[run_id]`: the command that finishes it). Runs over an input that cannot
    share an object with `own_input`, and `collection migrate` runs, are left out."""
    lines = []
    for run in sorted(others, key=lambda r: r.run_id):
        if run.run_id.startswith(MIGRATION_PREFIX) or not inputs_overlap(run.input, own_input):
            continue
        if is_live(run, now):
            done = f"{run.uncommitted} images done, not committed" if run.uncommitted else "not committed"
            lines.append(
                f"rekbatch: warning: run {run.run_id} is running on this output ({done}): images it has "
                f"not committed are analysed again by this run, unless another run committed them"
            )
        elif run.holds_work:
            lines.append(
                f"rekbatch: warning: run {run.run_id} stopped on this output with images analysed and "
                f"not committed: this run analyses (and pays for) them again, unless another run "
                f"committed them; finish it before the next run with: {resume[run.run_id]}"
            )
    return lines
