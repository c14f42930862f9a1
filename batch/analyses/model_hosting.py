"""The driver side of `custom_labels`: the models must run before the first image is sent.

Before the attempt (`ModelHooks.prepare`) each model's status is read: DescribeProjects finds the
project's ARN from the project name in the version ARN (a project ARN ends with the project's own
creation number, which the version ARN does not hold), then DescribeProjectVersions gives the version's
`Status`. A model that is not RUNNING stops the run at once, exit 2, with one line naming it and its
status; nothing is sent. Only with `--start-models` does the job start the models that are not running
(StartProjectVersion with `inference_units` as MinInferenceUnits), and only once a batch has an image to
analyse (`before_batch`: a run with nothing new starts nothing), wait for RUNNING (polling every
`poll_seconds`, at most `start_timeout_seconds`, and no longer once a signal asked the run to stop), and
stop them (StopProjectVersion) when the batches are over, or when the run fails or is interrupted
(`close`). A model running before the run is never stopped, unless a run of this output started it
and never stopped it (a driver killed: kill -9, an OOM kill, a lost node): every start is first
recorded under the output (`batch.core.model_records`, `batch.analyses.model_ledger`), and the next run
warns about such a model still running (or starting), and with `start_models` adopts it: stops it at
its end and prices its hours since the recorded start. The hours a started model ran are priced at
`[pricing] custom_labels_inference_hour` per inference unit. A dry run only reads the statuses.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from batch.analyses.base import DriverHooks, DriverReport, DriverSetup
from batch.analyses.model_ledger import ModelLedger
from batch.aws.rekognition import driver_caller
from batch.core.calls import CallCounts, CallResult
from batch.core.errors import ConfigError
from batch.core.model_records import ModelRecord, since

logger = logging.getLogger(__name__)

#: `ProjectVersionArn` in the botocore model (also `ProjectVersionId`, the moderation adapter): the
#: project's name and the version's name are its groups.
VERSION_ARN = re.compile(
    r"arn:[a-z\d-]+:rekognition:[a-z\d-]+:\d{12}:project/([a-zA-Z0-9_.\-]{1,255})/version/"
    r"([a-zA-Z0-9_.\-]{1,255})/[0-9]+"
)
#: `[pricing]` key: US dollars per inference unit per hour a model runs. "Inference hours" on
#: https://aws.amazon.com/rekognition/pricing/ (Custom Labels, us-east-1): $4.00.
HOUR_PRICE_KEY = "custom_labels_inference_hour"
HOUR_PRICE = 4.0

RUNNING = "RUNNING"
#: Statuses StartProjectVersion accepts (a model trained, or stopped since).
STARTABLE = frozenset({"TRAINING_COMPLETED", "STOPPED"})
#: Statuses a model goes through while starting: keep waiting.
STARTING = frozenset({"STARTING"})

#: The JSON summary's fields (`ModelHooks.report` fills them), with their defaults.
SUMMARY_FIELDS: dict[str, Any] = {
    "models_started": [],
    "models_adopted": [],
    "inference_hours": 0.0,
    "model_cost_usd": 0.0,
}


def project_and_version(arn: str) -> tuple[str, str]:
    """The project name and the version name of a model version ARN."""
    found = VERSION_ARN.fullmatch(arn)
    if found is None:
        raise ValueError(f"not a model version ARN: {arn!r}")
    return found.group(1), found.group(2)


@dataclass
class StartedModel:
    """A model this run started: when, with how many inference units, and when it stopped."""

    arn: str
    units: int
    started: float
    stopped: float | None = None
    #: Why StopProjectVersion failed (the model may still run and bill), or None.
    stop_error: str | None = None
    #: Its record under the output (None without an output); for an adopted model, the earlier run's.
    record: ModelRecord | None = None
    #: Started by an earlier run that never stopped it (its hours are priced from `record.started_at`).
    adopted: bool = False

    def hours(self, now: float) -> float:
        return ((self.stopped if self.stopped is not None else now) - self.started) / 3600

    def origin(self) -> str:
        if not self.adopted or self.record is None:
            return "started by this run"
        return (
            f"started at {since(self.record.started_at)} by run {self.record.run_id}, which never stopped it,"
        )

    def outcome(self) -> str:
        if self.stop_error is not None:
            return f"and NOT stopped ({self.stop_error}): stop it, it bills until then; priced to now"
        return "and stopped by this run" if self.adopted else "and stopped"


class VersionHooks(DriverHooks):
    """Reads a project version's status: a Custom Labels model or a moderation adapter (`features`)."""

    #: The config key the errors name; what a version is called in them.
    where, kind = "analyses.custom_labels", "model"
    #: DescribeProjects' `Features` (botocore: "If no value is specified, CUSTOM_LABELS is used").
    features: tuple[str, ...] = ()

    def __init__(self, setup: DriverSetup, analysis: str, *, caller: Any = None) -> None:
        """`caller` (a `RekognitionCaller`; default: the driver's, at the analysis's quota) makes the
        calls."""
        self._setup = setup
        self._settings = setup.settings
        self.counts = CallCounts()
        self._caller = caller or driver_caller(setup.config, analysis, self.counts, setup.quotas)
        self._projects: dict[str, str] = {}

    def status(self, arn: str) -> str:
        """The version's Status (DescribeProjects, then DescribeProjectVersions)."""
        project, version = project_and_version(arn)
        if project not in self._projects:
            request: dict[str, Any] = {"ProjectNames": [project]}
            if self.features:
                request["Features"] = list(self.features)
            found = self._call("describe_projects", "DescribeProjects", request)
            arns = [p.get("ProjectArn") for p in (found.response or {}).get("ProjectDescriptions") or []]
            if not arns:
                raise ConfigError(f"{self.where}: {self.kind} {arn}: no project {project!r} here")
            self._projects[project] = arns[0]
        request = {"ProjectArn": self._projects[project], "VersionNames": [version]}
        found = self._call("describe_project_versions", "DescribeProjectVersions", request)
        for description in (found.response or {}).get("ProjectVersionDescriptions") or []:
            if description.get("ProjectVersionArn") == arn:
                return str(description.get("Status"))
        raise ConfigError(f"{self.where}: {self.kind} {arn}: no such {self.kind} version")

    def _call(self, method: str, operation: str, request: dict[str, Any]) -> CallResult:
        result = self._caller.call(method, operation, request)
        if result.response is None and operation != "StopProjectVersion":
            raise ConfigError(f"{self.where}: {operation}: {result.error_code}: {result.message}")
        return result


class ModelHooks(VersionHooks):
    """`custom_labels` in the driver: check (and with `start_models`, start and stop) the models."""

    def __init__(
        self,
        setup: DriverSetup,
        analysis: str,
        *,
        caller: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`clock` and `sleep` time the wait for a model to start and its hours; `wall` (Unix seconds)
        dates the records of the models started, which outlive the process."""
        super().__init__(setup, analysis, caller=caller)
        self._clock, self._sleep, self._wall = clock, sleep, wall
        self._ledger = ModelLedger(setup.store) if setup.store is not None else None
        #: Lines about models earlier runs started and never stopped, for the summary.
        self._leftover_lines: list[str] = []
        self.statuses: dict[str, str] = {}
        self.started: list[StartedModel] = []
        #: Models not running that `before_batch` starts (with `start_models`).
        self._idle: list[str] = []
        self._closed = False

    def prepare(self, settings: Any) -> Any:
        """Read every model's status; stop the run (ConfigError, exit 2) on a model that is not running,
        unless `start_models` (then `before_batch` starts it, once an image needs it)."""
        for arn in settings.models:
            self.statuses[arn] = self.status(arn)
        if self._ledger is not None:
            for record in self._ledger.open_records():
                self._leftover(record, settings)
        idle = [arn for arn in settings.models if self.statuses[arn] != RUNNING]
        if self._setup.dry_run:  # it says what a run would do (`_forecast_lines`), and starts nothing
            return settings
        if idle and not settings.start_models:
            arn = idle[0]
            raise ConfigError(
                f"analyses.custom_labels: model {arn} is {self.statuses[arn]}, not RUNNING: start it "
                "(aws rekognition start-project-version), or run with --start-models to have the job "
                "start it and stop it at the end (billed per inference hour while it runs)"
            )
        for arn in idle:  # before any is started: a model that cannot start stops the run first
            if self.statuses[arn] not in STARTABLE | STARTING:
                raise ConfigError(
                    f"analyses.custom_labels: model {arn} is {self.statuses[arn]}: it cannot be started"
                )
        self._idle = idle
        return settings

    def _leftover(self, record: ModelRecord, settings: Any) -> None:
        """A model a run of this output started and did not see stopped: warn while it runs (or
        starts); with `start_models`, adopt it (this run stops it and prices its hours since the record)
        unless its run may be running now; close the record of a model found stopped."""
        arn, start = record.arn, since(record.started_at)
        try:
            status = self.statuses.get(arn) or self.status(arn)
        except ConfigError as exc:
            logger.warning(
                "model %s, started by run %s at %s: status unknown (%s)", arn, record.run_id, start, exc
            )
            return
        if status != RUNNING and status not in STARTING:
            if not self._setup.dry_run:  # stopped by someone: nothing runs, nothing to adopt
                self._ledger_write(record.stopped(self._wall()))
                logger.warning(
                    "model %s, started by run %s at %s and never stopped by it, is %s now: its hours until "
                    "it stopped are in no summary",
                    arn, record.run_id, start, status,
                )  # fmt: skip
            return
        said = f"model {arn} is {status} since {start}: started by run {record.run_id} of this output"
        live = None if record.run_id == self._setup.run_id else self._ledger_live(record.run_id)
        if live is not None:
            logger.warning("%s, which may still run (its heartbeat is %.0f s old): left to it", said, live)
            return
        if settings.start_models and arn in settings.models and not self._setup.dry_run:
            started = self._clock() - max(0.0, self._wall() - record.started_at)
            self.started.append(StartedModel(arn, record.units, started, record=record, adopted=True))
            logger.warning(
                "%s, which never stopped it: this run stops it at its end and bills its hours", said
            )
            return
        line = (
            f"{said}, which never stopped it: it bills until stopped (stop it, or run with --start-models "
            "and this model in analyses.custom_labels.models to have the job stop it)"
        )
        logger.warning("%s", line)
        self._leftover_lines.append(f"  {line}")

    def _ledger_live(self, run_id: str) -> float | None:
        return None if self._ledger is None else self._ledger.running_for(run_id)

    def _ledger_write(self, record: ModelRecord) -> None:
        if self._ledger is not None:
            self._ledger.write(record)

    def before_batch(self, keys: Sequence[str]) -> None:
        """The first batch with an image to analyse: start the idle models and wait until they run (a
        run with nothing to analyse starts nothing)."""
        if not keys or not self._idle or self._setup.dry_run:
            return
        idle, self._idle = self._idle, []
        for arn in idle:
            self._start(arn)
        for arn in idle:
            self._wait(arn)

    def _start(self, arn: str) -> None:
        if self.statuses[arn] in STARTABLE:
            units = self._settings.inference_units
            request = {"ProjectVersionArn": arn, "MinInferenceUnits": units}
            # Recorded first: a driver killed from now on leaves a record the next run finds.
            record = ModelRecord(arn, self._setup.run_id, units, self._wall())
            self._ledger_write(record)
            started = self._clock()
            self._call("start_project_version", "StartProjectVersion", request)
            self.started.append(StartedModel(arn, units, started, record=record))
            logger.warning("started model %s with %d inference units (billed until stopped)", arn, units)

    def _wait(self, arn: str) -> None:
        """Until the model runs; ConfigError when it fails or `start_timeout_seconds` pass."""
        deadline = self._clock() + self._settings.start_timeout_seconds
        while True:
            status = self.statuses[arn] = self.status(arn)
            if status == RUNNING:
                return
            if status not in STARTING | STARTABLE or self._clock() >= deadline:
                waited = f" after {self._settings.start_timeout_seconds:g} s" if status in STARTING else ""
                raise ConfigError(f"analyses.custom_labels: model {arn} did not start: {status}{waited}")
            if self._setup.stopping():  # a signal came while batches may be in flight: stop waiting
                raise KeyboardInterrupt
            self._sleep(self._settings.poll_seconds)

    def finish(self, *, completed: bool) -> None:
        """Stop the models this run started."""
        self._stop_started()

    def close(self) -> DriverReport | None:
        """The run ended early (an error, a signal): stop the models it started (or adopted), and say so,
        and say the models earlier runs left running."""
        if self._closed or not (any(m.stopped is None for m in self.started) or self._leftover_lines):
            return None
        self._stop_started()
        return self.report()

    def _stop_started(self) -> None:
        self._closed = True
        for model in self.started:
            if model.stopped is None:
                request = {"ProjectVersionArn": model.arn}
                stop = self._call("stop_project_version", "StopProjectVersion", request)
                model.stopped = self._clock()
                if not stop.ok:
                    model.stop_error = f"{stop.error_code}: {stop.message}"
                    logger.error("model %s: StopProjectVersion: %s", model.arn, model.stop_error)
                elif model.record is not None:  # the record stays open while the model may run
                    self._close_record(model.record)

    def _close_record(self, record: ModelRecord) -> None:
        try:
            self._ledger_write(record.stopped(self._wall()))
        except Exception as exc:  # the model is stopped: the next run finds it so and closes the record
            logger.warning("model %s stopped, its record not closed: %s", record.arn, exc)

    def report(self) -> DriverReport:
        prices = self._setup.config.prices
        now = self._clock()
        hours = sum(m.hours(now) * m.units for m in self.started)  # inference hours: x units
        cost = hours * prices[HOUR_PRICE_KEY]
        calls = Counter(self.counts.attempts)
        report = DriverReport(storage_calls=calls, image_cost_usd=cost)
        report.fields = {
            "models_started": [m.arn for m in self.started if not m.adopted],
            "models_adopted": [m.arn for m in self.started if m.adopted],
            "inference_hours": hours,
            "model_cost_usd": cost,
        }
        if self._setup.dry_run:
            report.dry_run_called = "DescribeProjects and DescribeProjectVersions only"
            report.forecast_lines = self._forecast_lines()
        report.lines += self._leftover_lines
        for model in self.started:
            report.lines.append(
                f"  model {model.arn}: {model.origin()} {model.outcome()}, {model.hours(now):.3f} h x "
                f"{model.units} inference units x ${prices[HOUR_PRICE_KEY]:.2f} = "
                f"${model.hours(now) * model.units * prices[HOUR_PRICE_KEY]:.4f}"
            )
        return report

    def _forecast_lines(self) -> list[str]:
        price = self._setup.config.prices[HOUR_PRICE_KEY]
        lines = []
        for arn, status in self.statuses.items():
            if status == RUNNING:
                lines.append(f"  model {arn}: RUNNING (billed per hour whether this run uses it or not)")
            elif status not in STARTABLE | STARTING:
                lines.append(f"  model {arn}: {status}; a run would stop, exit 2: it cannot be started")
            elif self._settings.start_models:
                units = self._settings.inference_units
                lines.append(
                    f"  model {arn}: {status}; a run would start it if an image needs it: {units} inference "
                    f"units x ${price:.2f} = ${units * price:.2f} per hour until it stops it at the end"
                )
            else:
                lines.append(f"  model {arn}: {status}; a run would stop, exit 2 (--start-models starts it)")
        return lines


#: The statuses of an adapter DetectModerationLabels answers with ("Adapter statuses",
#: https://docs.aws.amazon.com/rekognition/latest/dg/managing-adapters.html): trained, or trained on an
#: older base model (DEPRECATED: still used until it has EXPIRED). An EXPIRED adapter is not used (the
#: base model answers, the response names no adapter: rows the digest would say the adapter made), and
#: the others (training, failed, deleting) have no adapter to use.
ADAPTER_USABLE = frozenset({"TRAINING_COMPLETED", "DEPRECATED"})


class AdapterHooks(VersionHooks):
    """`moderation` with an adapter (`project_version`): before the attempt, the adapter must exist in
    the run's region and be usable, or the run stops (exit 2, one line) before any image is sent."""

    where, kind = "analyses.moderation.project_version", "adapter"
    features = ("CONTENT_MODERATION",)

    def prepare(self, settings: Any) -> Any:
        arn = settings.project_version
        status = self.status(arn)
        if status not in ADAPTER_USABLE:
            raise ConfigError(
                f"{self.where}: adapter {arn} is {status}: DetectModerationLabels would not use it "
                f"(usable: {' or '.join(sorted(ADAPTER_USABLE))})"
            )
        return settings

    def report(self) -> DriverReport:
        report = DriverReport(storage_calls=Counter(self.counts.attempts))
        if self._setup.dry_run:
            report.dry_run_called = "DescribeProjects and DescribeProjectVersions only"
        return report
