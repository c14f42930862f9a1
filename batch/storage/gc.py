"""`rekbatch gc`: delete the files no committed run lists (crashed and losing attempts), after a grace period.

A file goes when all three hold: it is under a table folder (`<table>/...`) or `_runs/` and no committed
manifest lists it (manifests are never deleted); it is older than the grace period (`--older-than`,
hours); and its run, when its name says which, is committed or has no control file younger than the grace
period (a crashed run being resumed now keeps the batches it is about to commit). Nothing else under the
output root is touched. After the grace period a crashed run's work is gone: `--resume` analyses it
again. See docs/design/commit-protocol.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from batch.analyses.registry import all_tables
from batch.core.manifest import RUNS_DIR, run_of_control_file, run_of_data_file
from batch.storage.commits import RunStore
from batch.storage.sink import Destination, StoredFile

logger = logging.getLogger(__name__)

#: Default grace period: a nightly run, and a resume the next day, keep their files.
DEFAULT_GRACE_HOURS = 48.0


def garbage(
    stored: Iterable[StoredFile], committed_files: set[str], committed_runs: set[str], cutoff: datetime
) -> list[StoredFile]:
    """The files to delete among `stored` (every file under the table folders and `_runs/`). Pure."""
    stored = list(stored)
    active = {
        run
        for f in stored
        if f.modified >= cutoff and (run := run_of_control_file(f.path)) and run not in committed_runs
    }

    def doomed(f: StoredFile) -> bool:
        if f.path in committed_files or f.modified >= cutoff:
            return False
        run = run_of_control_file(f.path) or run_of_data_file(f.path)
        return run is None or run not in active

    return [f for f in stored if doomed(f)]


def collect_garbage(
    destination: Destination, s3_client: Any, *, grace: timedelta, now: datetime, dry_run: bool = False
) -> list[StoredFile]:
    """Delete (unless `dry_run`) and return the files `garbage` picks under `destination`."""
    store = RunStore(destination, s3_client)
    manifests = store.manifests()
    committed_files = {entry.path for manifest in manifests for entry in manifest.files}
    folders = [f"{table}/" for table in all_tables()] + [f"{RUNS_DIR}/"]
    stored = [f for folder in folders for f in destination.list(folder, s3_client)]
    doomed = garbage(stored, committed_files, {m.run_id for m in manifests}, now - grace)
    if not dry_run and doomed:
        destination.delete([f.path for f in doomed], s3_client)
    logger.info("gc: %d of %d files %s", len(doomed), len(stored), "to delete" if dry_run else "deleted")
    return doomed
