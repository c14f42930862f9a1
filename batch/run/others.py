"""At a run's start, before any billed call: name on stderr the other runs of the output that have not
committed and whose images this run would analyse again (`batch.core.other_runs`).

What it reads: one listing of `_runs/`'s folders (gc empties those of runs committed before its grace
period) and one of `_commits/`'s names (no manifest read; a request per 1,000); then, for each run with
a folder and no final manifest (crashed, stopped or running: a few), a listing of its heartbeat files,
a read of the newest and of its first attempt's record, and, unless it is live, at most two one-page
listings (has it a batch or an image record). Nothing grows with the size of the runs. See
docs/operations.md, "Runs side by side".
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from batch.core.errors import OutputUnreadable
from batch.core.other_runs import OtherRun, is_live, warnings
from batch.core.redaction import one_line
from batch.run.summary import RunSummary, resume_command
from batch.storage.commits import RunStore

__all__ = ["warn_of_other_runs"]


def warn_of_other_runs(store: RunStore, summary: RunSummary) -> list[str]:
    """Print (and return) one warning line per other run of the output whose images the run of
    `summary` (its id, input, config digest and command line) analyses again."""
    now = datetime.now(UTC)
    try:
        committed = store.committed_run_ids()
        others = [
            _other_run(store, other, now)
            for other in store.run_ids()
            if other != summary.run_id and other not in committed
        ]
    except (
        OutputUnreadable,
        OSError,
        ClientError,
        BotoCoreError,
        ValueError,
        KeyError,
    ) as exc:  # the run goes on
        line = f"rekbatch: warning: other runs of this output not checked: {one_line(str(exc), 300)}"
        print(line, file=sys.stderr, flush=True)
        return [line]
    resume = {run.run_id: _resume(run, summary) for run in others}
    lines = warnings(others, summary.input, now, resume)
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return lines


def _resume(run: OtherRun, summary: RunSummary) -> str:
    """The command that finishes `run`: this run's own command line if they share input and config."""
    if (run.input, run.config_digest) == (summary.input, summary.config_digest):
        return resume_command(summary.command_line, run.run_id)
    return f"rekbatch run --resume {run.run_id} (with the input and config it ran with)"


def _other_run(store: RunStore, run_id: str, now: datetime) -> OtherRun:
    beat = store.newest_heartbeat(run_id)
    first = store.first_attempt(run_id)
    uncommitted = beat[1].get("uncommitted", 0) if beat else 0
    run = OtherRun(
        run_id,
        first.input if first else "",
        first.config_digest if first else "",
        beat[0] if beat else None,
        uncommitted if isinstance(uncommitted, int) else 0,
        holds_work=False,
    )
    return run if is_live(run, now) else dataclasses.replace(run, holds_work=store.holds_work(run_id))
