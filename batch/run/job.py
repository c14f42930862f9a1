"""One run of the batch job: plan from the listing, fan batches out to Dask, account, commit, summarise.

1. A run id that is already committed ends here (`already-committed`, exit 0, no calls). Otherwise the
   analyses' driver hooks prepare the run (`batch.analyses.base.DriverHooks`), the process claims an
   attempt number and, with `--resume`, keeps the work of the run's earlier attempts (`batch.run.resume`).
2. The listing is streamed and planned (`batch.run.plan`); batches run on Dask (`batch.run.drive`).
3. Commit (`batch.run.commit`): the ledger must be clean, then the `runs` row and the manifest.
   An aborted run (e.g. AccessDeniedException) never commits, nor does one stopped by SIGINT or SIGTERM
   (`batch.run.shutdown`: `interrupted`, exit 130 or 143).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from batch.analyses.base import DriverHooks, DriverSetup
from batch.analyses.registry import REGISTRY, in_run_order
from batch.aws.s3 import check_readable, check_writable, s3_client
from batch.aws.session import resolved_region
from batch.config.loader import config_digest
from batch.config.model import RunConfig, parse_s3_url
from batch.core.errors import ConfigError, OutputUnwritable
from batch.core.incremental import CommittedState, SettledState
from batch.core.manifest import Ledger, manifest_path
from batch.core.redaction import one_line
from batch.run.commit import Attempt, SegmentSnapshots, check_resume, commit, start_attempt, write_snapshot
from batch.run.drive import run_batches
from batch.run.dry_run import count_planned
from batch.run.others import warn_of_other_runs
from batch.run.plan import (
    inventory_manifest,
    listed_in,
    plan_images,
    selected_objects,
    unsettle,
    wanted_digests,
)
from batch.run.progress import terminal_line
from batch.run.quotas import resolve_quotas
from batch.run.resume import keep_earlier_work
from batch.run.shutdown import Shutdown
from batch.run.summary import RunSummary
from batch.run.text import format_summary
from batch.storage.commits import Heartbeat, RunStore
from batch.storage.sink import Destination
from batch.storage.snapshot import load_state

__all__ = ["new_run_id", "run"]

logger = logging.getLogger(__name__)


def new_run_id(now: datetime) -> str:
    """Sortable, unique, and free of colons (Athena's partition repair fails on them)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run(config: RunConfig, *, command_line: str = "", out: TextIO = sys.stdout) -> RunSummary:
    """Run the job as configured; return its summary (also printed to `out`)."""
    started = datetime.now(UTC)
    summary = RunSummary(
        run_id=config.resume or config.run_id or new_run_id(started),
        input=config.input,
        output=config.output,
        region=resolved_region(config.rekognition.region),
        analyses=config.analyses,
        config_digest=config_digest(config),
        command_line=command_line,
        started_at=started,
        resumed=bool(config.resume),
        full=config.full,
        max_error_rate=config.max_error_rate,
        extras={k: v for analysis in REGISTRY.values() for k, v in analysis.summary_fields().items()},
    )
    _check_summary_folder(config.summary_json)
    shutdown = Shutdown(config.dask.shutdown_grace_seconds)
    with shutdown.handling_signals():
        try:
            s3 = s3_client()
            if config.inventory:  # no listing of the input: the inventory stands for it
                inventory_manifest(config, s3)
            else:
                check_readable(s3, config.bucket, config.prefix)
            if config.dry_run:
                _dry_run(config, s3, summary)
            else:
                _check_output(config, s3)
                _run(config, s3, summary, shutdown)
                if summary.status == "completed" and config.report.enabled:  # this attempt committed
                    _write_report(config, summary, s3)
        except KeyboardInterrupt:
            summary.interrupt(shutdown.signum or signal.SIGINT)
        except Exception as exc:
            summary.fail(exc)
            raise
        finally:  # whatever the outcome: the summary JSON is what alerting reads
            summary.ended_at = summary.ended_at or datetime.now(UTC)
            print(format_summary(summary, dry_run=summary.status == "dry-run"), file=out)
            _write_summary_json(config.summary_json, summary)
    return summary


def _run(config: RunConfig, s3: Any, summary: RunSummary, shutdown: Shutdown) -> None:
    store = RunStore(Destination.for_output(config.output, config.output_options), s3)
    if store.manifest(summary.run_id) is not None:
        summary.end("already-committed")
        summary.manifest = store.destination.location(manifest_path(summary.run_id))
        return
    options = summary.config_digest  # the config alone, before the hooks resolve anything
    if config.resume:  # a resume refused before the hooks bill anything (a users' sync)
        check_resume(config, store, options)
    if not config.full:  # before any billed call (the hooks' too): runs whose images this one repeats
        warn_of_other_runs(store, summary)
    quotas = resolve_quotas(config, summary)  # before the hooks: their own calls are held to them too
    hooks = _driver_hooks(
        config, s3, store, quotas, dry_run=False, stopping=lambda: shutdown.requested, run_id=summary.run_id
    )
    try:
        config = _prepared(config, hooks)
        summary.config_digest = config_digest(config)  # with what the hooks resolved (reference ETags)
        attempt = start_attempt(config, store, summary, options)
        started = f"rekbatch: run {summary.run_id}: attempt {summary.attempt} started"
        print(terminal_line(started), file=sys.stderr, flush=True)
        # gc leaves a running attempt alone, and a run started beside it reads what it has not committed;
        # a segment's snapshot still being written is stopped at the end
        heartbeat = Heartbeat(
            store, summary.run_id, attempt.record.attempt, uncommitted=lambda: attempt.pending["listed"]
        )
        with heartbeat, SegmentSnapshots(store) as snapshots:
            _run_attempt(
                config, s3, summary, attempt, store=store, hooks=hooks, shutdown=shutdown, snapshots=snapshots
            )
    finally:  # an error or a signal too: e.g. the models the run started are stopped
        _close(hooks, summary)


def _run_attempt(
    config: RunConfig,
    s3: Any,
    summary: RunSummary,
    attempt: Attempt,
    *,
    store: RunStore,
    hooks: Mapping[str, DriverHooks],
    shutdown: Shutdown,
    snapshots: SegmentSnapshots,
) -> None:
    """The claimed attempt: keep what earlier attempts did (`--resume`), plan and run the batches,
    then commit unless the run stopped."""
    if config.resume:
        keep_earlier_work(config, store, summary, attempt)
    summary.images = attempt.ledger.counts

    def segment_if_due() -> None:  # readers see a long run's work as it goes (`run.commit_every`)
        elapsed = time.monotonic() - attempt.segment_clock
        if not config.commit_every.due(elapsed, attempt.pending["listed"]):
            return
        if commit(config, store, summary, attempt, final=False) and not shutdown.requested:
            snapshots.start()  # in the background: the batches go on meanwhile

    with ExitStack() as stack:
        state = _committed_state(config, s3, stack)
        for hook in hooks.values():
            hook.start(attempt.files)
        unsettle(state, hooks)
        with shutdown.deferred():
            run_batches(
                config, s3, summary, attempt, state, hooks=hooks, shutdown=shutdown, accounted=segment_if_due
            )
    if shutdown.requested:
        summary.interrupt(shutdown.signum or signal.SIGINT)
    _finish(hooks, summary, completed=summary.status == "running")
    if summary.status != "running":  # aborted, interrupted, or the output refused a write: no commit
        return
    if attempt.ledger.counts["listed"] == 0:
        summary.end("empty")
        return
    with shutdown.deferred():  # a commit once begun is finished: it is one create-only write
        committed = commit(config, store, summary, attempt)
    if committed:  # a signal now stops the snapshot (minutes at 10M keys), not the committed run
        write_snapshot(store, after=snapshots)
        if shutdown.requested:  # DuckDB may have turned the signal into its own exception
            raise KeyboardInterrupt


def _dry_run(config: RunConfig, s3: Any, summary: RunSummary) -> None:
    """Plan as a run would and count the calls and their cost (`batch.run.dry_run`); call nothing that
    is billed or changes anything, write nothing."""
    store = RunStore(Destination(config.output), s3) if config.output else None
    quotas = resolve_quotas(config, summary)
    hooks = _driver_hooks(config, s3, store, quotas, dry_run=True)
    config = _prepared(config, hooks)
    with ExitStack() as stack:
        state = _committed_state(config, s3, stack) if config.output else CommittedState()
        for hook in hooks.values():
            hook.start(())
        unsettle(state, hooks)
        ledger = Ledger()
        summary.images = ledger.counts
        listing = listed_in(selected_objects(config, s3), hooks.values())
        planned = plan_images(listing, ledger, state, wanted_digests(config), limit=config.limit)
        count_planned(config, s3, summary, hooks, planned)
    _finish(hooks, summary, completed=True)
    summary.end("dry-run")


def _driver_hooks(
    config: RunConfig,
    s3: Any,
    store: RunStore | None,
    quotas: Mapping[str, float],
    *,
    dry_run: bool,
    stopping: Callable[[], bool] = lambda: False,
    run_id: str = "",
) -> dict[str, DriverHooks]:
    """The driver-side hooks of each analysis of the run, in the order an image runs them (an analysis's
    hooks come after those of the analyses it runs after); their own calls held to `quotas` (the run's,
    in its own region)."""
    return {
        name: REGISTRY[name].driver(
            DriverSetup(config, config.analysis_settings[name], s3, store, dry_run, stopping, quotas, run_id)
        )
        for name in in_run_order(config.analyses)
    }


def _prepared(config: RunConfig, hooks: Mapping[str, DriverHooks]) -> RunConfig:
    """`config` with each analysis's settings as its hooks prepared them (e.g. references resolved)."""
    settings = {name: hook.prepare(config.analysis_settings[name]) for name, hook in hooks.items()}
    return dataclasses.replace(config, analysis_settings={**config.analysis_settings, **settings})


def _finish(hooks: Mapping[str, DriverHooks], summary: RunSummary, *, completed: bool) -> None:
    """After the batches: each analysis's `finish` hook, and its report into the summary."""
    for hook in hooks.values():
        hook.finish(completed=completed)
        summary.add_driver(hook.report())


def _close(hooks: Mapping[str, DriverHooks], summary: RunSummary) -> None:
    """Every analysis's `close` hook, its report (if the run ended before `_finish`) into the summary."""
    for hook in hooks.values():
        report = hook.close()
        if report is not None:
            summary.add_driver(report)


def _committed_state(config: RunConfig, s3: Any, stack: ExitStack) -> SettledState:
    """What committed runs under the output settled (nothing with `--full`): their snapshot and the
    runs committed since (`batch.storage.snapshot`); `stack` holds the snapshot's file open."""
    if config.full:
        return CommittedState()
    if config.output.startswith("s3://"):
        check_writable(s3, parse_s3_url(config.output, "output")[0])
    store = RunStore(Destination(config.output), s3)
    return load_state(store, store.manifests(), stack)


def _check_output(config: RunConfig, s3: Any) -> None:
    if config.output.startswith("s3://"):
        check_writable(s3, parse_s3_url(config.output, "output")[0])
        return
    try:
        Destination(config.output).check_writable()
    except OSError as exc:
        raise OutputUnwritable(f"cannot create output folder {config.output}: {exc.strerror}") from None


def _check_summary_folder(path: str) -> None:
    """`--summary-json`'s folder must take a file before anything is called (exit 2 if not)."""
    if not path:
        return
    folder = Path(path).parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-"):
            pass
    except OSError as exc:
        raise ConfigError(f"run.summary_json: cannot write in {folder}: {exc.strerror}") from None


def _write_summary_json(path: str, summary: RunSummary) -> None:
    """The summary as JSON at `path`, replaced in one step (an alert never reads half of it)."""
    if not path:
        return
    target = Path(path)
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        tmp.write_text(json.dumps(summary.as_json(), indent=2) + "\n")
        tmp.replace(target)
    except OSError as exc:  # the run's outcome stands; its exit code says it
        tmp.unlink(missing_ok=True)
        print(f"rekbatch: warning: summary not written to {path}: {exc.strerror}", file=sys.stderr)


def _write_report(config: RunConfig, summary: RunSummary, s3: Any) -> None:
    from batch.report.page import write_report  # matplotlib and Jinja2 only when a report is written

    try:
        summary.report = write_report(
            config.output, summary.run_id, config.report, s3, output_options=config.output_options
        )
    except Exception as exc:  # the tables are written: a report that fails must not fail the run
        logger.debug("run report failed", exc_info=True)
        summary.report_error = one_line(f"{type(exc).__name__}: {exc}", 300)
