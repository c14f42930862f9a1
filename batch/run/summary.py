"""What a run did: `RunSummary`, printed for people and written as JSON and as the `runs` row.

Its accounting comes in through four doors only: the batch records (`add_batch`), the calls of images a
crashed attempt left unfinished (`add_lost`), the dry run's plan (`add_planned`) and the analyses'
driver-side reports (`add_driver`); its status through `end` (`fail` for an exception, `interrupt` for
a signal). The calls and the cost are the run's over all its attempts, the repeats (work a crash or a
failed task threw away) included and also shown apart.
"""

from __future__ import annotations

import resource
import shlex
import signal
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from batch.analyses.base import DriverReport
from batch.core.calls import paid_calls, throttled_calls
from batch.core.errors import (
    CommitRaceLost,
    Interrupted,
    NothingToAnalyse,
    OutputUnwritable,
    RekbatchError,
    RunAborted,
    TooManyErrors,
)
from batch.core.manifest import BatchRecord, error_rate
from batch.core.redaction import redact
from batch.core.timeline import SecondKey

__all__ = ["RunSummary", "cpu_seconds", "resume_command"]


@dataclass
class RunSummary:
    """What a run did; printed for people and written as JSON and as the `runs` row."""

    run_id: str
    input: str
    output: str
    analyses: tuple[str, ...]
    config_digest: str
    command_line: str
    started_at: datetime
    ended_at: datetime | None = None
    #: running, completed (committed), aborted, unwritable (the output refused a write), interrupted (a
    #: signal: `interrupt`), lost-race, already-committed, empty, dry-run; or error when an exception
    #: ended the run (`fail`).
    status: str = "running"
    reason: str | None = None
    #: The exit code of the exception that ended the run (`fail`), else None.
    failed_with: int | None = None
    #: The signal that interrupted the run (`interrupt`), else 0.
    signum: int = 0
    #: `listed` and one count per outcome (`batch.core.manifest.OUTCOMES`): the run's ledger's counts.
    images: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    throttled: int = 0
    files: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    #: The image calls at list price (the analyses' operations); the calls priced apart are below.
    estimated_cost_usd: float = 0.0
    #: Of `calls` and `estimated_cost_usd`: the calls paid for work thrown away (tries of images that
    #: died with their process, or whose task failed), which were or will be made again.
    repeated_calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    repeated_cost_usd: float = 0.0
    #: Calls priced apart from the image calls (keeping a face collection in sync), at list price.
    storage_cost_usd: float = 0.0
    #: Operations of the calls priced apart.
    storage_operations: set[str] = field(default_factory=set)
    dashboard: str | None = None
    #: CPU seconds of the worker processes (gathered before the cluster closes).
    worker_cpu_seconds: float = 0.0
    #: CPU seconds of all the job's processes from the first batch to the last (start-up excluded).
    processing_cpu_seconds: float = 0.0
    attempt: int = 0
    resumed: bool = False
    #: Batches of earlier attempts that a resumed run kept, and batches split after their task failed.
    kept_batches: int = 0
    split_batches: int = 0
    #: Images of earlier attempts a resumed run kept: those of kept batches, and those done in batches
    #: a crash cut short (their records).
    kept_images: int = 0
    #: The run's manifests committed so far, by every attempt: its segments (`run.commit_every`),
    #: and its final one once it is committed.
    segments: int = 0
    full: bool = False
    max_error_rate: float = 1.0
    #: Where the manifest is, once this attempt (or an earlier one) committed the run.
    manifest: str | None = None
    #: Attempts by Unix second, operation and outcome class: the `call_seconds` table.
    call_seconds: Counter[SecondKey] = field(default_factory=Counter)
    #: Calls per second allowed per operation, across the cluster, and where each came from ("flag",
    #: "config", "service-quotas" or "default": `batch.core.service_quotas`).
    quotas: dict[str, float] = field(default_factory=dict)
    quota_sources: dict[str, str] = field(default_factory=dict)
    #: With several regions (`rekognition.regions`): each region's quota per operation (`quotas` holds
    #: their sums, `quota_sources` the run's own region's sources); empty for one region.
    region_quotas: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Where the run report was written, or why it was not.
    report: str | None = None
    report_error: str | None = None
    #: The analyses' own summary fields (`Analysis.summary_fields`), filled by their driver reports.
    extras: dict[str, Any] = field(default_factory=dict)
    #: The analyses' lines for people (`DriverReport.lines`, `forecast_lines`).
    driver_lines: list[str] = field(default_factory=list)
    #: The analyses' driver rows by table (`DriverReport.tables`), committed with the `runs` row.
    driver_tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    forecast_lines: list[str] = field(default_factory=list)
    #: What a dry run called besides listing and reading the output ("" for nothing).
    dry_run_called: str = ""
    #: The AWS region Rekognition is called in, as botocore resolves it ("" if none: the run stops).
    region: str = ""
    #: A dry run's kind: "bound" (headers not read: its counts are upper bounds) or "probed" (read:
    #: its count of images sent is exact); "" for a run.
    dry_run: str = ""
    #: A dry run's images not sent, by error code (only the empty ones unless it probed headers).
    refused: Counter[str] = field(default_factory=Counter)

    def add_batch(self, record: BatchRecord, prices: Mapping[str, float]) -> None:
        """A finished batch's calls, files and rows; its paid calls at `prices` (per operation)."""
        self.calls.update(record.calls)
        self.retries += record.retries
        self.throttled += record.throttled
        self.add_files(record.files)
        self.estimated_cost_usd += _cost(record.calls, prices)
        self.repeated_calls.update(record.repeated)
        self.repeated_cost_usd += _cost(record.repeated, prices)

    def add_lost(
        self,
        calls: Mapping[tuple[str, str], int],
        retries: int,
        repeated: Mapping[tuple[str, str], int],
        prices: Mapping[str, float],
    ) -> None:
        """The calls of an image that an earlier attempt left unfinished, and of them the `repeated`
        ones: those its new try makes again."""
        self.calls.update(calls)
        self.retries += retries
        self.throttled += throttled_calls(calls.items())
        self.estimated_cost_usd += _cost(calls, prices)
        self.repeated_calls.update(repeated)
        self.repeated_cost_usd += _cost(repeated, prices)

    def add_files(self, files: Any, *, count_rows: bool = True) -> None:
        """Files written for the run (`FileEntry`s) and, unless told not to, their rows per table (the
        run's own `runs` and `call_seconds` files are files, not rows of what it analysed)."""
        for written in files:
            self.files += 1
            if count_rows:
                self.rows[written.table] += written.rows

    def add_planned(self, operation: str, calls: int, cost_usd: float) -> None:
        """A dry run's planned calls of one image's analysis, and what they would cost."""
        self.calls[(operation, "planned")] += calls
        self.estimated_cost_usd += cost_usd

    def add_driver(self, report: DriverReport) -> None:
        """What an analysis did in the driver (collection sync, reference faces)."""
        self.calls.update(report.calls)
        self.calls.update(report.storage_calls)
        self.storage_operations.update(operation for operation, _ in report.storage_calls)
        self.estimated_cost_usd += report.image_cost_usd
        self.storage_cost_usd += report.storage_cost_usd
        self.extras.update(report.fields)
        self.driver_lines += report.lines
        self.forecast_lines += report.forecast_lines
        self.dry_run_called = self.dry_run_called or report.dry_run_called
        for table, rows in report.tables.items():
            self.driver_tables.setdefault(table, []).extend(rows)

    def end(self, status: str, reason: str | None = None) -> None:
        """The run's outcome (`status`), with a one-line reason for an aborted run (redacted: it may
        quote an endpoint's URL)."""
        self.status, self.reason = status, reason if reason is None else redact(reason)

    def fail(self, error: Exception) -> None:
        """An exception ended the run: its status, its one-line reason and the CLI's exit code for it."""
        status = "unwritable" if isinstance(error, OutputUnwritable) else "error"
        self.end(status, " ".join(str(error).split())[:500] or type(error).__name__)
        self.failed_with = error.exit_code if isinstance(error, RekbatchError) else 1

    def interrupt(self, signum: int) -> None:
        """A signal stopped the run before it committed; a committed run stays committed (its report,
        if it was being written, is not)."""
        name = signal.Signals(signum).name
        if self.status == "running":
            self.end("interrupted", name)
            self.signum = signum
        elif self.status == "completed" and self.report is None:
            self.report_error = self.report_error or f"stopped by {name}"

    @property
    def seconds(self) -> float:
        end = self.ended_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    @property
    def error_rate(self) -> float:
        return error_rate(self.images)

    def problem(self) -> RekbatchError | None:
        """Why the run exits non-zero (a one-line reason and its exit code), or None."""
        stopped = self._stopped()
        if stopped is not None:
            return stopped
        if self.status == "lost-race":
            return CommitRaceLost(
                f"run {self.run_id}: another attempt committed it first; "
                f"attempt {self.attempt}'s files are not read"
            )
        if self.status == "empty":
            return NothingToAnalyse(f"no images under {self.input}; nothing committed")
        if self.status == "completed" and self.error_rate > self.max_error_rate:
            return TooManyErrors(
                f"run {self.run_id} committed, but {self.error_rate:.1%} of the images sent were rejected "
                f"or failed (max error rate {self.max_error_rate:g})"
            )
        return None

    def _stopped(self) -> RekbatchError | None:
        """The reason of a run that stopped before its commit and that `--resume` finishes."""
        if self.status == "aborted":
            return RunAborted(f"run {self.run_id} aborted, {self._committed_so_far}: {self.reason}")
        if self.status == "unwritable":
            return OutputUnwritable(
                f"run {self.run_id} stopped, {self._committed_so_far}: {self.reason}; "
                f"--resume {self.run_id} finishes it once the output can be written"
            )
        if self.status == "interrupted":
            return self._interrupted()
        return None

    @property
    def _committed_so_far(self) -> str:
        """What readers see of a run that stopped before its final commit: its segments, if any."""
        if not self.segments:
            return "nothing committed"
        return f"{self.segments} segments committed (readers see them), not the whole run"

    def _interrupted(self) -> Interrupted:
        """The one line of an interrupted run: the run id and how to finish it."""
        how = f"run {self.run_id} stopped by {self.reason}, {self._committed_so_far}"
        if not self.attempt:
            return Interrupted(f"{how}; it had not started, so there is nothing to resume", self.signum)
        command = resume_command(self.command_line, self.run_id)
        return Interrupted(f"{how}; finish it with: {command}", self.signum)

    @property
    def exit_code(self) -> int:
        if self.failed_with is not None:
            return self.failed_with
        problem = self.problem()
        return problem.exit_code if problem else 0

    @property
    def committed(self) -> bool:
        return self.status in ("completed", "already-committed")

    def call_counts(self, calls: Mapping[tuple[str, str], int] | None = None) -> list[dict[str, Any]]:
        """Attempts by operation and outcome (`calls`, else all the run's), as the JSON summary and the
        `runs` table give them."""
        return [
            {"operation": op, "outcome": outcome, "count": n}
            for (op, outcome), n in sorted((self.calls if calls is None else calls).items())
        ]

    def quota_list(self) -> list[dict[str, Any]]:
        """Each operation's quota and its source, as the JSON summary and the `runs` table give them."""
        return [
            {"operation": op, "tps": tps, "source": self.quota_sources.get(op)}
            for op, tps in sorted(self.quotas.items())
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "committed": self.committed,
            "manifest": self.manifest,
            "attempt": self.attempt,
            "resumed": self.resumed,
            "kept_batches": self.kept_batches,
            "kept_images": self.kept_images,
            "split_batches": self.split_batches,
            "segments": self.segments,
            "full": self.full,
            "input": self.input,
            "output": self.output,
            "region": self.region or None,
            "quotas": self.quota_list(),
            "region_quotas": self.region_quotas,
            "analyses": list(self.analyses),
            "config_digest": self.config_digest,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": round(self.seconds, 3),
            "images": dict(self.images),
            "error_rate": round(self.error_rate, 6),
            "max_error_rate": self.max_error_rate,
            "calls": self.call_counts(),
            "retries": self.retries,
            "throttled": self.throttled,
            "files": self.files,
            "rows": dict(self.rows),
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
            "repeated_calls": self.call_counts(self.repeated_calls),
            "repeated_cost_usd": round(self.repeated_cost_usd, 6),
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in self.extras.items()},
            "storage_cost_usd": round(self.storage_cost_usd, 6),
            "dry_run": {"kind": self.dry_run, "refused": dict(self.refused)} if self.dry_run else None,
            "dashboard": self.dashboard,
            "report": self.report,
            "cpu_seconds": {
                "driver": round(cpu_seconds(), 3),
                "workers": round(self.worker_cpu_seconds, 3),
                "processing": round(self.processing_cpu_seconds, 3),
            },
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def resume_command(command_line: str, run_id: str) -> str:
    """`command_line` (a `rekbatch run` command) made to resume `run_id`: its `--run-id` or `--resume`
    replaced by `--resume RUN_ID`, every other flag kept (a resume needs the same input and config)."""
    words = shlex.split(command_line) or ["rekbatch", "run"]
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--run-id", "--resume"):
            skip = True
        elif not word.startswith(("--run-id=", "--resume=")):
            kept.append(word)
    return shlex.join([*kept, "--resume", run_id])


def _cost(calls: Mapping[tuple[str, str], int], prices: Mapping[str, float]) -> float:
    """The paid calls among `calls` at `prices` (per operation)."""
    return sum(paid_calls(calls, operation) * price for operation, price in prices.items())


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (runs on the workers too, through client.run)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
