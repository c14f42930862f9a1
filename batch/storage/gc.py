"""`rekbatch gc`: delete the files no committed run lists (crashed and losing attempts), after a grace period.

The settled state's snapshots (`_state/`) are caches: all but the newest `KEPT_SNAPSHOTS` go once older
than the grace period. Another file goes when all of these hold: it is under a table folder
(`<table>/...`) or `_runs/` and no committed manifest lists it (manifests are never deleted); it is older
than the grace period (`--older-than`, hours); its run, when its name says which, is not live; and its
run is committed or has no control file younger than the grace period (a crashed run being resumed now
keeps the batches it is about to commit). A run with committed segments and no final manifest keeps its
control files (`_runs/<run_id>/`) whatever their age: without its attempt and batch records `--resume`
cannot finish it, and a new attempt would reuse attempt 1's file names. A run is live when one of its
control files (the heartbeat a running attempt rewrites every `HEARTBEAT_SECONDS`, attempt and batch
records) changed in the last `LIVE_SECONDS`: gc takes nothing of a running attempt, whatever the grace
period. Nothing else under the output root is touched. After the grace period a crashed run's work is
gone: `--resume` analyses it again. The CLI refuses a grace period under `MIN_GRACE_HOURS` without
`--force`. See docs/design/commit-protocol.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batch.analyses.registry import all_tables
from batch.core.manifest import LIVE_SECONDS, RUNS_DIR, run_of_control_file, run_of_data_file
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, StoredFile
from batch.storage.snapshot import SNAPSHOT_DIR

logger = logging.getLogger(__name__)

#: Default grace period: a nightly run, and a resume the next day, keep their files.
DEFAULT_GRACE_HOURS = 48.0
#: The shortest grace period the CLI takes without `--force`.
MIN_GRACE_HOURS = 1.0


#: State snapshots gc keeps, newest first, whatever their age (`batch.storage.snapshot`): a run starting
#: now may be reading the newest, and the one before stands in if the newest is unreadable.
KEPT_SNAPSHOTS = 2


def stale_snapshots(stored: Iterable[StoredFile], cutoff: datetime) -> list[StoredFile]:
    """The snapshots (files under `_state/`) to delete: all but the `KEPT_SNAPSHOTS` newest (their names
    sort by the runs they cover), and only those older than `cutoff`. Pure."""
    newest_first = sorted(stored, key=lambda f: f.path, reverse=True)
    return [f for f in newest_first[KEPT_SNAPSHOTS:] if f.modified < cutoff]


def live_runs(stored: Iterable[StoredFile], live_since: datetime) -> set[str]:
    """The runs with a control file changed at or after `live_since`: an attempt is running. Pure."""
    return {run for f in stored if f.modified >= live_since and (run := run_of_control_file(f.path))}


def garbage(
    stored: Iterable[StoredFile],
    committed_files: set[str],
    committed_runs: set[str],
    cutoff: datetime,
    live_since: datetime,
    *,
    unfinished_runs: Iterable[str] = (),
) -> list[StoredFile]:
    """The files to delete among `stored` (every file under the table folders and `_runs/`): older than
    `cutoff`, listed by no manifest, of no live run (`live_runs`) and of no crashed run with a control
    file younger than `cutoff`; the control files of `unfinished_runs` (committed segments, no final
    manifest) are kept whatever their age: `--resume` needs them to finish the run. Pure."""
    unfinished = set(unfinished_runs)
    stored = list(stored)
    kept_runs = live_runs(stored, live_since) | {
        run for run in live_runs(stored, cutoff) if run not in committed_runs
    }

    def doomed(f: StoredFile) -> bool:
        if f.path in committed_files or f.modified >= cutoff or run_of_control_file(f.path) in unfinished:
            return False
        run = run_of_control_file(f.path) or run_of_data_file(f.path)
        return run is None or run not in kept_runs

    return [f for f in stored if doomed(f)]


@dataclass(frozen=True)
class Collected:
    """What one gc found: the files it deleted (or would), and the live runs whose files it left."""

    doomed: list[StoredFile]
    live_runs: list[str]


def collect_garbage(
    destination: Destination, s3_client: Any, *, grace: timedelta, now: datetime, dry_run: bool = False
) -> Collected:
    """Delete (unless `dry_run`) the files `garbage` picks under `destination`."""
    store = RunStore(destination, s3_client)
    manifests = store.manifests()
    committed_files = {entry.path for manifest in manifests for entry in manifest.files}
    folders = [f"{table}/" for table in all_tables()] + [f"{RUNS_DIR}/"]
    stored = [f for folder in folders for f in destination.list(folder, s3_client)]
    live_since = now - timedelta(seconds=LIVE_SECONDS)
    committed_runs = {m.run_id for m in manifests if m.final}  # a run with segments only is not done
    unfinished = {m.run_id for m in manifests} - committed_runs  # its attempt and batch records stay
    doomed = garbage(
        stored, committed_files, committed_runs, now - grace, live_since, unfinished_runs=unfinished
    )
    snapshots = list(destination.list(f"{SNAPSHOT_DIR}/", s3_client))
    doomed += stale_snapshots(snapshots, now - grace)
    stored += snapshots
    if not dry_run and doomed:
        destination.delete([f.path for f in doomed], s3_client)
    logger.info("gc: %d of %d files %s", len(doomed), len(stored), "to delete" if dry_run else "deleted")
    return Collected(doomed, sorted(live_runs(stored, live_since)))
