"""The records of the Custom Labels models runs of an output started (`batch.core.model_records`), on
the output: read the open ones, write one before a start, close one after a stop, and tell whether the
run that wrote one may still be running (its heartbeat, `batch.storage.commits.Heartbeat`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batch.core.manifest import LIVE_SECONDS, RUNS_DIR
from batch.core.model_records import MODELS_DIR, ModelRecord, record_path


class ModelLedger:
    """`_models/` under the output of `store` (a `batch.storage.commits.RunStore`)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def open_records(self) -> list[ModelRecord]:
        """The records of models no run has seen stopped, in path order."""
        found = []
        for stored in self._store.destination.list(f"{MODELS_DIR}/", self._store.s3_client):
            if stored.path.rsplit("/", 1)[-1].startswith("."):  # a local write's temporary file
                continue
            body = self._store.read(stored.path)
            record = None if body is None else ModelRecord.from_json(body)
            if record is not None and record.stopped_at is None and stored.path == record_path(record.arn):
                found.append(record)
        return found

    def write(self, record: ModelRecord) -> None:
        """Replace the model's record (OutputUnwritable when the output refuses it)."""
        self._store.destination.publish(record_path(record.arn), record.to_json(), self._store.s3_client)

    def running_for(self, run_id: str, now: datetime | None = None) -> float | None:
        """Seconds since the newest heartbeat of `run_id` when it is not committed and that is under
        `LIVE_SECONDS` (its run may be running now), else None."""
        if self._store.manifest(run_id) is not None:
            return None
        now = now or datetime.now(UTC)
        beats = self._store.destination.list(f"{RUNS_DIR}/{run_id}/", self._store.s3_client)
        ages = [(now - f.modified).total_seconds() for f in beats if "/heartbeat-" in f.path]
        fresh = [age for age in ages if age < LIVE_SECONDS]
        return min(fresh) if fresh else None
