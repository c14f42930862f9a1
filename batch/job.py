"""One run of the batch job: list the prefix, fan batches out to Dask, write the tables, summarise.

The driver holds the listing as a stream and only counts what comes back; the images' rows are
written by the tasks. It writes the `runs` row at the end, and, for a batch whose task failed
outright (e.g. KilledWorker), that batch's `images` and `errors` rows, so no listed image goes
unaccounted for.
"""

from __future__ import annotations

import json
import logging
import resource
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from batch.analyses import REGISTRY
from batch.concurrency import ConcurrencyPlan, LatencyEstimate
from batch.config import RunConfig, parse_s3_url
from batch.errors import OutputUnwritable
from batch.executor import dask_client, run_windowed, worker_threads
from batch.ratelimit import install_quota
from batch.retry import error_code
from batch.s3 import check_readable, check_writable, list_pages, s3_client
from batch.selection import ListedObject, batched, is_selected
from batch.sink import Destination, write_tables
from batch.tables import CALL_SECONDS_SCHEMA, ERRORS_SCHEMA, IMAGES_SCHEMA, RUNS_SCHEMA
from batch.timeline import SecondKey, timeline_rows
from batch.worker import BatchResult, BatchSpec, RunContext, process_batch

logger = logging.getLogger(__name__)


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
    status: str = "running"
    reason: str | None = None
    images: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    throttled: int = 0
    files: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    estimated_cost_usd: float = 0.0
    dashboard: str | None = None
    #: CPU seconds of the worker processes (gathered before the cluster closes).
    worker_cpu_seconds: float = 0.0
    #: CPU seconds of all the job's processes from the first batch to the last (start-up excluded).
    processing_cpu_seconds: float = 0.0
    #: Attempts by Unix second, operation and outcome class: the `call_seconds` table.
    call_seconds: Counter[SecondKey] = field(default_factory=Counter)
    #: Calls per second allowed per operation, across the cluster.
    quotas: dict[str, float] = field(default_factory=dict)
    #: Where the run report was written, or why it was not.
    report: str | None = None
    report_error: str | None = None

    @property
    def seconds(self) -> float:
        end = self.ended_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    def call_counts(self) -> list[dict[str, Any]]:
        """Attempts by operation and outcome, as the JSON summary and the `runs` table give them."""
        return [
            {"operation": op, "outcome": outcome, "count": n}
            for (op, outcome), n in sorted(self.calls.items())
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "input": self.input,
            "output": self.output,
            "analyses": list(self.analyses),
            "config_digest": self.config_digest,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": round(self.seconds, 3),
            "images": dict(self.images),
            "calls": self.call_counts(),
            "retries": self.retries,
            "throttled": self.throttled,
            "files": self.files,
            "rows": dict(self.rows),
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
            "dashboard": self.dashboard,
            "report": self.report,
            "cpu_seconds": {
                "driver": round(_cpu_seconds(), 3),
                "workers": round(self.worker_cpu_seconds, 3),
                "processing": round(self.processing_cpu_seconds, 3),
            },
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def new_run_id(now: datetime) -> str:
    """Sortable, unique, and free of colons (Athena's partition repair fails on them)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run(config: RunConfig, *, command_line: str = "", out: TextIO = sys.stdout) -> RunSummary:
    """Run the job as configured; return its summary (also printed to `out`)."""
    started = datetime.now(UTC)
    summary = RunSummary(
        run_id=config.run_id or new_run_id(started),
        input=config.input,
        output=config.output,
        analyses=config.analyses,
        config_digest=config.digest(),
        command_line=command_line,
        started_at=started,
    )
    s3 = s3_client()
    check_readable(s3, config.bucket, config.prefix)
    if config.dry_run:
        _dry_run(config, s3, summary)
    else:
        _check_output(config, s3)
        _run_batches(config, s3, summary)
    summary.ended_at = datetime.now(UTC)
    if not config.dry_run:
        _write_runs_row(config, summary, s3)
        if config.report.enabled:
            _write_report(config, summary, s3)
    print(format_summary(summary, dry_run=config.dry_run), file=out)
    if config.summary_json:
        Path(config.summary_json).write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return summary


def selected_objects(config: RunConfig, s3: Any) -> Iterator[ListedObject]:
    """The images to analyse, streamed page by page from the listing."""
    for page in list_pages(s3, config.bucket, config.prefix):
        yield from (obj for obj in page if is_selected(obj, config.prefix, config.input_filter))


def _dry_run(config: RunConfig, s3: Any, summary: RunSummary) -> None:
    for batch in batched(selected_objects(config, s3), 1000, config.limit):
        for obj in batch:
            summary.images["listed"] += 1
            summary.images["skipped" if obj.size == 0 else "to_analyse"] += 1
    to_analyse = summary.images["to_analyse"]
    for name in config.analyses:
        summary.calls[(REGISTRY[name].operation, "planned")] = to_analyse
        summary.estimated_cost_usd += to_analyse * config.prices[name]
    summary.status = "dry-run"


def _check_output(config: RunConfig, s3: Any) -> None:
    if config.output.startswith("s3://"):
        check_writable(s3, parse_s3_url(config.output, "output")[0])
        return
    try:
        Path(config.output).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputUnwritable(f"cannot create output folder {config.output}: {exc.strerror}") from None


def _run_batches(config: RunConfig, s3: Any, summary: RunSummary) -> None:
    destination = Destination(config.output)
    with dask_client(config.dask) as client:
        processes, threads = worker_threads(client)
        # One quota per operation for the whole cluster, held by the scheduler (batch.ratelimit).
        quotas = {REGISTRY[name].operation: config.quota(name) for name in config.analyses}
        install_quota(client, quotas, default=config.rekognition.tps)
        summary.quotas = quotas
        cpu_before = _cpu_seconds() + sum(client.run(_cpu_seconds).values())
        summary.dashboard = client.dashboard_link
        logger.info(
            "Dask: %d worker processes, %d threads; dashboard %s", processes, threads, client.dashboard_link
        )
        context = RunContext(
            run_id=summary.run_id,
            dt=summary.started_at.strftime("%Y-%m-%d"),
            bucket=config.bucket,
            analyses=config.analyses,
            analysis_settings={name: config.analysis_settings[name] for name in config.analyses},
            rekognition=config.rekognition,
            destination=destination,
            compression=config.output_options.compression,
            threads_per_process=config.dask.threads_per_worker * config.rekognition.max_calls_in_flight,
        )
        plan = ConcurrencyPlan(
            total_rate=sum(quotas.values()),
            task_slots=threads,
            max_per_task=config.rekognition.max_calls_in_flight,
        )
        latency = LatencyEstimate(config.rekognition.expected_latency)

        def in_flight() -> int:
            return config.rekognition.calls_in_flight or plan.per_task(latency.seconds)

        def batch_size() -> int:
            # A task has at most its batch's images in flight: a batch twice the planned concurrency
            # keeps the task's threads busy for most of it.
            return max(config.dask.batch_size, 2 * in_flight())

        counter = _Counted(selected_objects(config, s3))
        specs = (
            BatchSpec(context, index, tuple(objects), in_flight())
            for index, objects in enumerate(batched(counter, batch_size, config.limit))
        )
        window = config.dask.batches_in_flight or 2 * threads
        progress = Progress(quotas)
        if sys.stderr.isatty():
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
        for spec, result, error in run_windowed(
            client, process_batch, specs, window=window, key=lambda spec: f"batch-{spec.file_name}"
        ):
            outcome = result if error is None else _record_failed_batch(spec, error, s3)
            _add(summary, outcome, config)
            latency.update(outcome.latency_seconds, outcome.answered)
            progress.listed_total = counter.total
            progress.tick(summary)
            if outcome.fatal and summary.status != "aborted":
                summary.status, summary.reason = "aborted", outcome.fatal
                specs.close()  # submit nothing more; let the batches in flight finish
        progress.close()
        summary.worker_cpu_seconds = sum(client.run(_cpu_seconds).values())
        summary.processing_cpu_seconds = _cpu_seconds() + summary.worker_cpu_seconds - cpu_before
    if summary.status == "running":
        summary.status = "completed"


class _Counted:
    """Wraps the listing stream: counts what went through, and knows the total once it has ended."""

    def __init__(self, objects: Iterator[ListedObject]) -> None:
        self._objects = objects
        self.seen = 0
        self.total: int | None = None

    def __iter__(self) -> Iterator[ListedObject]:
        for obj in self._objects:
            self.seen += 1
            yield obj
        self.total = self.seen


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (runs on the workers too, through client.run)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _record_failed_batch(spec: BatchSpec, error: BaseException, s3: Any) -> BatchResult:
    """A task that failed outright: its images become `failed` rows, each with an error row."""
    context = spec.context
    code = error_code(error)
    message = " ".join(str(error).split())[:500]
    images, errors = [], []
    for obj in spec.objects:
        common = {"run_id": context.run_id, "bucket": context.bucket, "key": obj.key, "etag": obj.etag}
        images.append(
            {
                **common,
                "size_bytes": obj.size,
                "last_modified": obj.last_modified,
                "exif_orientation": 1,
                "status": "failed",
                "status_reason": f"task failed: {code}",
                "analyses": [],
            }
        )
        errors.append(
            {
                **common,
                "analysis": None,
                "operation": None,
                "error_code": code,
                "message": message,
                "attempts": 0,
                "retryable": True,
            }
        )
    files = write_tables(
        context.destination,
        {"images": images, "errors": errors},
        {"images": IMAGES_SCHEMA, "errors": ERRORS_SCHEMA},
        dt=context.dt,
        name=spec.file_name,
        compression=context.compression,
        s3_client=s3,
    )
    result = BatchResult(spec.index, files=files)
    result.statuses["failed"] = len(spec.objects)
    return result


def _add(summary: RunSummary, result: BatchResult, config: RunConfig) -> None:
    summary.images.update(result.statuses)
    summary.images["listed"] += sum(result.statuses.values())
    summary.calls.update(result.calls)
    summary.call_seconds.update(result.call_seconds)
    summary.retries += result.retries
    summary.throttled += result.throttled
    summary.files += len(result.files)
    for written in result.files:
        summary.rows[written.table] += written.rows
    for name in config.analyses:
        summary.estimated_cost_usd += (
            result.calls.get((REGISTRY[name].operation, "ok"), 0) * config.prices[name]
        )


def _write_runs_row(config: RunConfig, summary: RunSummary, s3: Any) -> None:
    row = {
        "run_id": summary.run_id,
        "bucket": config.bucket,
        "key": config.prefix,
        "etag": None,
        "started_at": summary.started_at,
        "ended_at": summary.ended_at,
        "input": summary.input,
        "output": summary.output,
        "analyses": list(summary.analyses),
        "config_digest": summary.config_digest,
        "command_line": summary.command_line,
        **{
            f"images_{status}": summary.images.get(status, 0)
            for status in ("listed", "analysed", "rejected", "failed", "skipped")
        },
        "calls": summary.call_counts(),
        "retries": summary.retries,
        "throttled": summary.throttled,
        "estimated_cost_usd": summary.estimated_cost_usd,
        "status": summary.status,
    }
    timeline = timeline_rows(
        summary.call_seconds,
        started_at=summary.started_at,
        quotas=summary.quotas,
        common={"run_id": summary.run_id, "bucket": config.bucket, "key": config.prefix, "etag": None},
    )
    files = write_tables(
        Destination(config.output),
        {"call_seconds": timeline, "runs": [row]},  # the runs row last: it says the run has ended
        {"runs": RUNS_SCHEMA, "call_seconds": CALL_SECONDS_SCHEMA},
        dt=summary.started_at.strftime("%Y-%m-%d"),
        name=summary.run_id,
        compression=config.output_options.compression,
        s3_client=s3,
    )
    summary.files += len(files)


def _write_report(config: RunConfig, summary: RunSummary, s3: Any) -> None:
    from batch.report import write_report  # matplotlib and Jinja2 only when a report is written

    try:
        summary.report = write_report(config.output, summary.run_id, config.report, s3)
    except Exception as exc:  # the tables are written: a report that fails must not fail the run
        logger.debug("run report failed", exc_info=True)
        summary.report_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def format_summary(summary: RunSummary, *, dry_run: bool = False) -> str:
    """A short summary for people."""
    images = summary.images
    lines = []
    if dry_run:
        lines.append(
            f"dry run over {summary.input}: {images['listed']} images listed, "
            f"{images['to_analyse']} to analyse, {images['skipped']} zero-byte to skip"
        )
        for (operation, _), n in sorted(summary.calls.items()):
            lines.append(f"  would call {operation} {n} times")
        lines.append(
            f"  estimated cost at list price: ${summary.estimated_cost_usd:.4f} (nothing was called)"
        )
        return "\n".join(lines)
    lines.append(
        f"run {summary.run_id}: {summary.status} in {summary.seconds:.1f} s"
        + (f" ({summary.reason})" if summary.reason else "")
    )
    lines.append(
        f"  images: {images['listed']} listed: {images['analysed']} analysed, {images['rejected']} rejected, "
        f"{images['failed']} failed, {images['skipped']} skipped"
    )
    by_operation: dict[str, list[str]] = {}
    for (operation, outcome), n in sorted(summary.calls.items()):
        by_operation.setdefault(operation, []).append(f"{n} {outcome}")
    for operation, parts in by_operation.items():
        lines.append(f"  {operation}: {', '.join(parts)}")
    lines.append(
        f"  retries: {summary.retries}, throttled: {summary.throttled}; "
        f"estimated cost ${summary.estimated_cost_usd:.4f}"
    )
    tables = ", ".join(f"{t} {n}" for t, n in sorted(summary.rows.items()))
    lines.append(f"  output: {summary.output} ({summary.files} files; rows: {tables})")
    if summary.report or summary.report_error:
        lines.append(f"  report: {summary.report or f'not written: {summary.report_error}'}")
    return "\n".join(lines)


class Progress:
    """One status line on stderr every few seconds when it is a terminal; silent under cron and Airflow.

    Shows images done, successful calls per second per operation against the quota, throttles, errors,
    and an ETA once the listing has ended (before that the total is not known: the listing is streamed).
    """

    def __init__(
        self, quotas: Mapping[str, float], *, every: float = 2.0, stream: TextIO = sys.stderr
    ) -> None:
        self._quotas = quotas
        self._every = every
        self._stream = stream
        self._enabled = stream.isatty()
        self._started = self._last = time.monotonic()
        self.listed_total: int | None = None

    def tick(self, summary: RunSummary) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < self._every:
            return
        self._last = now
        print(f"\r\033[K{self.line(summary, now - self._started)}", end="", file=self._stream, flush=True)

    def line(self, summary: RunSummary, elapsed: float) -> str:
        done = sum(n for status, n in summary.images.items() if status != "listed")
        rates = " ".join(
            f"{op.removeprefix('Detect')} {n / max(elapsed, 1e-9):.0f}/{self._quotas.get(op, 0):g}"
            for (op, outcome), n in sorted(summary.calls.items())
            if outcome == "ok"
        )
        errors = summary.images["rejected"] + summary.images["failed"]
        text = f"{done} images, calls/s {rates or '-'}, {summary.throttled} throttled, {errors} errors"
        if self.listed_total and done:
            text += f", ETA {(self.listed_total - done) * elapsed / done:.0f} s"
        return text

    def close(self) -> None:
        if self._enabled:
            print(file=self._stream)
