"""The record of a Custom Labels model a run started, kept under the output until the model is stopped.

A run with `--start-models` writes `_models/<version name>-<digest of the ARN>.json` before it calls
StartProjectVersion (when, by which run, with how many inference units) and marks it stopped once
StopProjectVersion answered. A driver killed in between (kill -9, an OOM kill, a lost node) leaves the
record open: the model may run, and bill, with no run to stop it. The next run of the output reads the
open records (`batch.analyses.model_hosting`): it warns about a model still running, and with
`--start-models` adopts it (stops it at its end and prices its hours since `started_at`). The job's
IAM policy has no delete: a record is closed by replacing it, never removed. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["MODELS_DIR", "ModelRecord", "record_path", "since"]

#: Under the output: one record per model version a run of this output started (`rekbatch gc` leaves it).
MODELS_DIR = "_models"


@dataclass(frozen=True)
class ModelRecord:
    """A model a run started: its ARN, the run, the inference units, and when (Unix seconds, taken
    before the start call and after the stop call, so the hours between are never fewer than billed)."""

    arn: str
    run_id: str
    units: int
    started_at: float
    #: None while the model may run (the run that started it has not seen it stopped).
    stopped_at: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> ModelRecord | None:
        """The record, or None for a body that is not one (a half-written or foreign file)."""
        try:
            fields = json.loads(body)
            record = cls(
                arn=str(fields["arn"]),
                run_id=str(fields["run_id"]),
                units=int(fields["units"]),
                started_at=float(fields["started_at"]),
                stopped_at=None if fields.get("stopped_at") is None else float(fields["stopped_at"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return record

    def stopped(self, when: float) -> ModelRecord:
        return dataclasses.replace(self, stopped_at=when)


def record_path(arn: str) -> str:
    """The record's path under the output: readable (the version's name) and one per ARN (a digest)."""
    parts = arn.split("/")
    version = parts[-2] if len(parts) >= 2 else "model"
    return f"{MODELS_DIR}/{version}-{hashlib.sha256(arn.encode()).hexdigest()[:12]}.json"


def since(started_at: float) -> str:
    """`started_at` as people read it in a warning: UTC, to the second."""
    return datetime.fromtimestamp(started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
