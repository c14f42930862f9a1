"""custom_labels and moderation adapters: requests, rows, digests, and the driver's model lifecycle
(`batch.analyses.model_hosting`) against a scripted Rekognition: which calls, in which order, when the
run stops, what is stopped, and what the hours cost."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from batch.analyses import custom_labels, moderation
from batch.analyses.base import DriverSetup, ImageInput
from batch.analyses.model_hosting import AdapterHooks, ModelHooks, project_and_version
from batch.analyses.model_ledger import ModelLedger
from batch.analyses.registry import _digest, settings_digest
from batch.config.model import RunConfig
from batch.core.calls import CallResult
from batch.core.errors import ConfigError
from batch.core.geometry import BoxPlacement
from batch.core.manifest import heartbeat_path
from batch.core.model_records import ModelRecord, record_path
from batch.storage.commits import RunStore
from batch.storage.sink import Destination

MODEL = "arn:aws:rekognition:us-east-1:123456789012:project/widgets/version/widgets.2026-01-01/1767261600000"
OTHER = "arn:aws:rekognition:us-east-1:123456789012:project/gadgets/version/g.1/1767261600002"
ADAPTER = "arn:aws:rekognition:us-east-1:123456789012:project/mod/version/mod.1/1767261600001"
IMAGE = {"S3Object": {"Bucket": "b", "Name": "k.jpg"}}


# --- requests and rows ----------------------------------------------------------------------------


def test_custom_labels_request_sends_only_the_options_set() -> None:
    plain = custom_labels.Settings(models=(MODEL,))
    assert custom_labels.build_request(IMAGE, plain, MODEL) == {"ProjectVersionArn": MODEL, "Image": IMAGE}
    chosen = custom_labels.Settings.from_mapping({"models": [MODEL], "min_confidence": 0, "max_results": 3})
    request = custom_labels.build_request(IMAGE, chosen, MODEL)
    assert (request["MinConfidence"], request["MaxResults"]) == (0.0, 3)


def test_labels_with_geometry_get_upright_boxes_and_polygons_and_image_labels_get_none() -> None:
    box = {"Left": 0.5, "Top": 0.25, "Width": 0.25, "Height": 0.5}
    polygon = [{"X": 0.5, "Y": 0.25}, {"X": 0.75, "Y": 0.25}, {"X": 0.75, "Y": 0.75}, {"X": 0.5, "Y": 0.75}]
    response = {
        "CustomLabels": [
            {"Name": "Widget", "Confidence": 97.5, "Geometry": {"BoundingBox": box, "Polygon": polygon}},
            {"Name": "Shelf", "Confidence": 88.0},
        ]
    }
    # Exif 6: stored 400x800, upright 800x400; the answer's ratios are of the upright frame.
    placement = BoxPlacement.for_response(
        image_format="JPEG",
        stored_width=400,
        stored_height=800,
        exif_orientation=6,
        orientation_correction=None,
    )
    widget, shelf = custom_labels.flatten(response, placement)["custom_labels"]
    assert (widget["box_left_px"], widget["box_top_px"], widget["box_width_px"], widget["box_height_px"]) == (
        400,
        100,
        200,
        200,
    )
    assert (widget["stored_box_width_px"], widget["stored_box_height_px"]) == (200, 200)
    assert [(p["x_px"], p["y_px"]) for p in widget["polygon"]] == [
        (400, 100),
        (600, 100),
        (600, 300),
        (400, 300),
    ]
    assert shelf["box_left_px"] is None
    assert shelf["polygon"] is None
    assert shelf["confidence"] == 88.0


def answer(labels: list[dict[str, Any]]) -> CallResult:
    return CallResult({"CustomLabels": labels}, 1)


def test_run_calls_each_model_and_tags_its_rows_and_stops_at_the_first_failure() -> None:
    settings = custom_labels.Settings(models=(MODEL, OTHER), min_confidence=60.0)
    sent: list[Mapping[str, Any]] = []
    answers = {MODEL: answer([{"Name": "Widget", "Confidence": 90.0}]), OTHER: answer([])}

    def call(method: str, operation: str, request: Mapping[str, Any]) -> CallResult:
        assert (method, operation) == ("detect_custom_labels", "DetectCustomLabels")
        sent.append(request)
        return answers[request["ProjectVersionArn"]]

    image = ImageInput(IMAGE, lambda: b"", lambda _: BoxPlacement(100, 100))
    outcome = custom_labels.ANALYSIS.run(image, settings, call)
    assert [r["ProjectVersionArn"] for r in sent] == [MODEL, OTHER]
    assert all(r["MinConfidence"] == 60.0 for r in sent)
    assert outcome.failed is None
    assert [(r["name"], r["model_arn"]) for r in outcome.rows["custom_labels"]] == [("Widget", MODEL)]

    answers[MODEL] = CallResult(None, 3, "ResourceNotReadyException", "stopped")
    sent.clear()
    outcome = custom_labels.ANALYSIS.run(image, settings, call)
    assert outcome.failed == ("DetectCustomLabels", answers[MODEL])
    assert len(sent) == 1
    assert custom_labels.ANALYSIS.planned_calls(settings) == 2


def test_the_digest_holds_the_models_in_any_order_but_not_how_they_are_started() -> None:
    analysis = custom_labels.ANALYSIS
    both = settings_digest(analysis, custom_labels.Settings(models=(MODEL, OTHER)))
    assert both == settings_digest(analysis, custom_labels.Settings(models=(OTHER, MODEL)))
    assert both != settings_digest(analysis, custom_labels.Settings(models=(MODEL,)))
    started = custom_labels.Settings(
        models=(MODEL, OTHER), start_models=True, inference_units=4, poll_seconds=1
    )
    assert both == settings_digest(analysis, started)
    assert both != settings_digest(analysis, custom_labels.Settings(models=(MODEL, OTHER), max_results=5))


def test_custom_labels_needs_a_model() -> None:
    with pytest.raises(ConfigError, match=r"^analyses\.custom_labels\.models: list at least one"):
        custom_labels.ANALYSIS.check(custom_labels.Settings())
    assert project_and_version(MODEL) == ("widgets", "widgets.2026-01-01")


def test_moderation_sends_the_adapter_and_keeps_content_types_and_the_adapter() -> None:
    plain = moderation.Settings()
    assert "ProjectVersion" not in moderation.build_request(IMAGE, plain)
    adapted = moderation.Settings.from_mapping({"project_version": ADAPTER})
    assert moderation.build_request(IMAGE, adapted)["ProjectVersion"] == ADAPTER
    response = {
        "ModerationLabels": [{"Name": "Violence", "ParentName": "", "TaxonomyLevel": 1, "Confidence": 90.0}],
        "ModerationModelVersion": "7.0",
        "ProjectVersion": ADAPTER,
        "ContentTypes": [{"Name": "Animated", "Confidence": 88.5}],
    }
    (row,) = moderation.flatten(response, BoxPlacement(10, 10))["moderation"]
    assert row["content_types"] == [{"name": "Animated", "confidence": 88.5}]
    assert row["adapter"] == ADAPTER
    assert row["model_version"] == "7.0"


def test_the_moderation_digest_is_unchanged_without_an_adapter_and_changes_with_one() -> None:
    analysis = moderation.ANALYSIS
    before = _digest(analysis, {"min_confidence": 50.0})  # the document of the settings before adapters
    assert settings_digest(analysis, moderation.Settings()) == before
    assert settings_digest(analysis, moderation.Settings(project_version=ADAPTER)) != before


# --- the driver: checking, starting and stopping models -------------------------------------------


class Scripted:
    """A Rekognition whose models change status as it is told: StartProjectVersion makes a model
    STARTING, and it is RUNNING after `starting_polls` DescribeProjectVersions (or `end_status`)."""

    def __init__(self, statuses: dict[str, str], *, starting_polls: int = 2, end_status: str = "RUNNING"):
        self.statuses = dict(statuses)
        self.polls = dict.fromkeys(statuses, 0)
        self.starting_polls, self.end_status = starting_polls, end_status
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse_stop = False

    def call(self, method: str, operation: str, request: dict[str, Any]) -> CallResult:
        self.calls.append((operation, request))
        if operation == "DescribeProjects":
            (name,) = request["ProjectNames"]
            return CallResult({"ProjectDescriptions": [{"ProjectArn": f"arn:...:project/{name}/1700"}]}, 1)
        if operation == "DescribeProjectVersions":
            (arn,) = [a for a in self.statuses if project_and_version(a)[1] in request["VersionNames"]]
            assert request["ProjectArn"] == f"arn:...:project/{project_and_version(arn)[0]}/1700"
            if self.statuses[arn] == "STARTING":
                self.polls[arn] += 1
                if self.polls[arn] >= self.starting_polls:
                    self.statuses[arn] = self.end_status
            described = {"ProjectVersionArn": arn, "Status": self.statuses[arn]}
            return CallResult({"ProjectVersionDescriptions": [described]}, 1)
        arn = request["ProjectVersionArn"]
        if operation == "StopProjectVersion" and self.refuse_stop:
            return CallResult(None, 3, "InternalServerError", "try again")
        self.statuses[arn] = "STARTING" if operation == "StartProjectVersion" else "STOPPED"
        return CallResult({"Status": self.statuses[arn]}, 1)

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def hooks(
    rekognition: Scripted,
    clock: Clock,
    *,
    dry_run: bool = False,
    store: RunStore | None = None,
    run_id: str = "",
    **settings: Any,
) -> ModelHooks:
    """The hooks of a run; with `store`, its model records are kept there, dated by `clock` + 1.7e9
    (`clock` starts at 1000)."""
    chosen = custom_labels.Settings(models=tuple(rekognition.statuses), poll_seconds=30.0, **settings)
    config = RunConfig(prices={"custom_labels_inference_hour": 4.0})
    setup = DriverSetup(config, chosen, s3=None, store=store, dry_run=dry_run, run_id=run_id)
    wall = lambda: clock.now + 1.7e9  # noqa: E731
    return ModelHooks(setup, "custom_labels", caller=rekognition, clock=clock, sleep=clock.sleep, wall=wall)


def test_a_model_not_running_stops_the_run_naming_it_and_its_status_and_nothing_is_started() -> None:
    rekognition = Scripted({MODEL: "RUNNING", OTHER: "STOPPED"})
    driver = hooks(rekognition, Clock())
    with pytest.raises(
        ConfigError, match=rf"^analyses\.custom_labels: model {OTHER} is STOPPED, not RUNNING"
    ):
        driver.prepare(driver._settings)
    assert "StartProjectVersion" not in rekognition.operations()
    assert driver.close() is None


def test_start_models_starts_waits_stops_only_what_it_started_and_prices_the_hours() -> None:
    rekognition, clock = Scripted({MODEL: "RUNNING", OTHER: "TRAINING_COMPLETED"}, starting_polls=3), Clock()
    driver = hooks(rekognition, clock, start_models=True, inference_units=2)
    driver.prepare(driver._settings)
    driver.before_batch([])  # no image of the batch needs custom_labels
    assert "StartProjectVersion" not in rekognition.operations()
    driver.before_batch(["a.jpg"])
    driver.before_batch(["b.jpg"])
    assert [r for op, r in rekognition.calls if op == "StartProjectVersion"] == [
        {"ProjectVersionArn": OTHER, "MinInferenceUnits": 2}
    ]
    assert rekognition.statuses[OTHER] == "RUNNING"
    assert clock.now == 1000.0 + 2 * 30.0  # two polls found it STARTING
    clock.now += 3600 - 60  # the batches: an hour after the start in all
    driver.finish(completed=True)
    assert [r for op, r in rekognition.calls if op == "StopProjectVersion"] == [{"ProjectVersionArn": OTHER}]
    assert rekognition.statuses == {MODEL: "RUNNING", OTHER: "STOPPED"}
    report = driver.report()
    assert report.fields == {
        "models_started": [OTHER],
        "models_adopted": [],
        "inference_hours": 2.0,
        "model_cost_usd": 8.0,
    }
    assert report.image_cost_usd == 8.0
    assert report.lines == [
        f"  model {OTHER}: started by this run and stopped, 1.000 h x 2 inference units x $4.00 = $8.0000"
    ]
    assert driver.close() is None  # stopped once


def test_a_model_that_fails_or_takes_too_long_to_start_stops_the_run_and_close_stops_it() -> None:
    rekognition, clock = Scripted({MODEL: "STOPPED"}, starting_polls=2, end_status="FAILED"), Clock()
    driver = hooks(rekognition, clock, start_models=True)
    driver.prepare(driver._settings)
    with pytest.raises(ConfigError, match=rf"model {MODEL} did not start: FAILED$"):
        driver.before_batch(["a.jpg"])
    report = driver.close()
    assert rekognition.operations()[-1] == "StopProjectVersion"
    assert report is not None
    assert report.fields["models_started"] == [MODEL]

    rekognition, clock = Scripted({MODEL: "STOPPED"}, starting_polls=10**6), Clock()
    driver = hooks(rekognition, clock, start_models=True, start_timeout_seconds=120.0)
    driver.prepare(driver._settings)
    with pytest.raises(ConfigError, match=rf"model {MODEL} did not start: STARTING after 120 s$"):
        driver.before_batch(["a.jpg"])
    assert clock.now == 1000.0 + 120.0
    driver.close()
    assert rekognition.statuses[MODEL] == "STOPPED"


def test_a_run_with_nothing_to_analyse_starts_no_model_and_a_signal_ends_the_wait() -> None:
    rekognition = Scripted({MODEL: "STOPPED"}, starting_polls=10**6)
    driver = hooks(rekognition, Clock(), start_models=True)
    driver.prepare(driver._settings)
    driver.finish(completed=True)
    assert rekognition.operations() == ["DescribeProjects", "DescribeProjectVersions"]
    assert driver.report().fields["models_started"] == []

    stop = False
    driver = hooks(rekognition, Clock(), start_models=True)
    driver._setup = dataclasses.replace(driver._setup, stopping=lambda: stop)
    driver.prepare(driver._settings)
    stop = True
    with pytest.raises(KeyboardInterrupt):
        driver.before_batch(["a.jpg"])
    assert driver.close() is not None
    assert rekognition.statuses[MODEL] == "STOPPED"


def test_a_model_that_cannot_be_started_is_not_started() -> None:
    rekognition = Scripted({MODEL: "TRAINING_FAILED"})
    driver = hooks(rekognition, Clock(), start_models=True)
    with pytest.raises(ConfigError, match=rf"model {MODEL} is TRAINING_FAILED: it cannot be started$"):
        driver.prepare(driver._settings)
    assert "StartProjectVersion" not in rekognition.operations()


def test_a_dry_run_reads_the_statuses_starts_nothing_and_says_what_an_hour_costs() -> None:
    rekognition = Scripted({MODEL: "RUNNING", OTHER: "STOPPED"})
    driver = hooks(rekognition, Clock(), dry_run=True, start_models=True)
    driver.prepare(driver._settings)
    driver.finish(completed=True)
    report = driver.report()
    assert set(rekognition.operations()) == {"DescribeProjects", "DescribeProjectVersions"}
    assert report.dry_run_called == "DescribeProjects and DescribeProjectVersions only"
    assert report.forecast_lines[1] == (
        f"  model {OTHER}: STOPPED; a run would start it if an image needs it: 1 inference units x $4.00 "
        "= $4.00 per hour until it stops it at the end"
    )
    assert report.fields["model_cost_usd"] == 0.0
    without = hooks(Scripted({OTHER: "STOPPED"}), Clock(), dry_run=True)
    without.prepare(without._settings)
    assert "a run would stop, exit 2" in without.report().forecast_lines[0]


def test_a_stop_that_fails_is_said_in_the_summary_and_the_model_priced_to_then() -> None:
    rekognition, clock = Scripted({MODEL: "STOPPED"}, starting_polls=1), Clock()
    driver = hooks(rekognition, clock, start_models=True)
    driver.prepare(driver._settings)
    driver.before_batch(["a.jpg"])
    rekognition.refuse_stop, clock.now = True, clock.now + 1800
    driver.finish(completed=True)
    (line,) = driver.report().lines
    assert f"model {MODEL}: started by this run and NOT stopped (InternalServerError: try again)" in line
    assert driver.report().fields["inference_hours"] == 0.5


def test_a_dry_run_stops_on_no_status_and_tells_what_a_run_would_do() -> None:
    rekognition = Scripted({MODEL: "TRAINING_FAILED"})
    driver = hooks(rekognition, Clock(), dry_run=True, start_models=True)
    driver.prepare(driver._settings)
    assert driver.report().forecast_lines == [
        f"  model {MODEL}: TRAINING_FAILED; a run would stop, exit 2: it cannot be started"
    ]


# --- the records of the models started: a driver killed leaves its model to the next run ---------


def test_a_record_round_trips_and_anything_else_is_no_record() -> None:
    record = ModelRecord(MODEL, "k9", 2, 1.7e9)
    assert ModelRecord.from_json(record.to_json()) == record
    assert ModelRecord.from_json(record.stopped(1.7e9 + 60).to_json()) == record.stopped(1.7e9 + 60)
    for junk in (
        b"",
        b"{",
        b"[]",
        b'{"arn": "x"}',
        b'{"arn": "x", "run_id": "r", "units": "two", "started_at": 1}',
    ):
        assert ModelRecord.from_json(junk) is None
    assert record_path(MODEL) == record_path(MODEL) != record_path(OTHER)
    assert record_path(MODEL).startswith("_models/widgets.2026-01-01-")


class Recording(Scripted):
    """Scripted, and the open records on the output at each StartProjectVersion."""

    def __init__(self, statuses: dict[str, str], ledger: ModelLedger, **more: Any) -> None:
        super().__init__(statuses, **more)
        self.ledger, self.open_at_start = ledger, []

    def call(self, method: str, operation: str, request: dict[str, Any]) -> CallResult:
        if operation == "StartProjectVersion":
            self.open_at_start.append(self.ledger.open_records())
        return super().call(method, operation, request)


def test_a_start_is_recorded_before_the_call_and_the_record_closed_once_the_model_stopped(
    tmp_path: Any,
) -> None:
    store = RunStore(Destination(str(tmp_path)))
    rekognition, clock = Recording({MODEL: "STOPPED"}, ModelLedger(store), starting_polls=1), Clock()
    driver = hooks(rekognition, clock, store=store, run_id="r1", start_models=True, inference_units=2)
    driver.prepare(driver._settings)
    driver.before_batch(["a.jpg"])
    assert rekognition.open_at_start == [[ModelRecord(MODEL, "r1", 2, 1000.0 + 1.7e9)]]
    rekognition.refuse_stop = True  # a stop that fails: the model may run, its record stays open
    driver.finish(completed=True)
    assert ModelLedger(store).open_records() == [ModelRecord(MODEL, "r1", 2, 1000.0 + 1.7e9)]

    rekognition.refuse_stop = False
    again = hooks(rekognition, clock, store=store, run_id="r2", start_models=True)
    rekognition.statuses[MODEL] = "RUNNING"
    again.prepare(again._settings)
    again.finish(completed=True)
    assert ModelLedger(store).open_records() == []


def killed_run(tmp_path: Any, status: str) -> tuple[RunStore, Scripted, Clock]:
    """An output whose run `k9` started MODEL at clock 1000 and was killed: MODEL is `status`."""
    store = RunStore(Destination(str(tmp_path)))
    ModelLedger(store).write(ModelRecord(MODEL, "k9", 2, 1000.0 + 1.7e9))
    clock = Clock()
    clock.now += 1800  # the next run starts half an hour later
    return store, Scripted({MODEL: status}, starting_polls=1), clock


def test_a_model_left_running_by_a_killed_run_is_said_and_left_without_start_models(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, rekognition, clock = killed_run(tmp_path, "RUNNING")
    driver = hooks(rekognition, clock, store=store, run_id="n2")
    driver.prepare(driver._settings)
    driver.finish(completed=True)
    said = f"model {MODEL} is RUNNING since 2023-11-14T22:30:00Z: started by run k9 of this output"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(said)
    assert "\n" not in warning
    assert driver.report().lines == [f"  {warning}"]
    assert driver.report().fields["model_cost_usd"] == 0.0
    assert "StopProjectVersion" not in rekognition.operations()
    assert [r.arn for r in ModelLedger(store).open_records()] == [MODEL]
    ended_early = hooks(rekognition, clock, store=store, run_id="n3")
    ended_early.prepare(ended_early._settings)
    report = ended_early.close()  # an error or a signal before `finish`: the summary still says it
    assert report is not None
    assert report.lines == [f"  {warning}"]


@pytest.mark.parametrize("status", ["RUNNING", "STARTING"])
def test_start_models_adopts_a_model_a_killed_run_left_stops_it_and_prices_its_hours_since_the_record(
    tmp_path: Any, status: str
) -> None:
    store, rekognition, clock = killed_run(tmp_path, status)
    driver = hooks(rekognition, clock, store=store, run_id="n2", start_models=True)
    driver.prepare(driver._settings)
    driver.before_batch([])  # nothing to analyse: the adopted model is stopped all the same
    clock.now += 1800
    driver.finish(completed=True)
    assert "StartProjectVersion" not in rekognition.operations()
    assert rekognition.operations()[-1] == "StopProjectVersion"
    report = driver.report()
    assert report.fields == {
        "models_started": [],
        "models_adopted": [MODEL],
        "inference_hours": 2.0,  # an hour since the record's start x 2 units
        "model_cost_usd": 8.0,
    }
    assert report.lines == [
        f"  model {MODEL}: started at 2023-11-14T22:30:00Z by run k9, which never stopped it, and stopped "
        "by this run, 1.000 h x 2 inference units x $4.00 = $8.0000"
    ]
    assert ModelLedger(store).open_records() == []


def test_a_resume_adopts_what_its_killed_attempt_started_and_another_live_run_keeps_its_model(
    tmp_path: Any,
) -> None:
    store, rekognition, clock = killed_run(tmp_path, "RUNNING")
    Destination(str(tmp_path)).publish(heartbeat_path("k9", 1), b"{}")  # k9's driver beat just now
    other = hooks(rekognition, clock, store=store, run_id="n2", start_models=True)
    other.prepare(other._settings)
    other.finish(completed=True)
    assert other.started == []
    assert "StopProjectVersion" not in rekognition.operations()
    resumed = hooks(rekognition, clock, store=store, run_id="k9", start_models=True)
    resumed.prepare(resumed._settings)
    resumed.finish(completed=True)
    assert resumed.report().fields["models_adopted"] == [MODEL]
    assert rekognition.statuses[MODEL] == "STOPPED"


def test_the_record_of_a_model_someone_stopped_is_closed_and_a_dry_run_writes_nothing(tmp_path: Any) -> None:
    store, rekognition, clock = killed_run(tmp_path, "STOPPED")
    dry = hooks(rekognition, clock, store=store, dry_run=True, start_models=True)
    dry.prepare(dry._settings)
    assert len(ModelLedger(store).open_records()) == 1
    driver = hooks(rekognition, clock, store=store, run_id="n2", start_models=True)
    driver.prepare(driver._settings)
    assert ModelLedger(store).open_records() == []
    assert driver.started == []


# --- a moderation adapter is checked before the attempt -------------------------------------------


class Adapters:
    """DescribeProjects and DescribeProjectVersions of one adapter project, as AWS answers them."""

    def __init__(self, status: str | None) -> None:
        self.status, self.calls = status, []

    def call(self, method: str, operation: str, request: dict[str, Any]) -> CallResult:
        self.calls.append((operation, request))
        if operation == "DescribeProjects":
            found = self.status is not None and request.get("Features") == ["CONTENT_MODERATION"]
            projects = [{"ProjectArn": "arn:...:project/mod/1700"}] if found else []
            return CallResult({"ProjectDescriptions": projects}, 1)
        described = [{"ProjectVersionArn": ADAPTER, "Status": self.status}]
        return CallResult({"ProjectVersionDescriptions": described}, 1)


def adapter_hooks(status: str | None, arn: str = ADAPTER) -> tuple[AdapterHooks, Adapters]:
    rekognition = Adapters(status)
    settings = moderation.Settings(project_version=arn)
    setup = DriverSetup(RunConfig(), settings, s3=None, store=None, dry_run=False)
    return AdapterHooks(setup, "moderation", caller=rekognition), rekognition


@pytest.mark.parametrize("status", ["TRAINING_COMPLETED", "DEPRECATED"])
def test_a_usable_adapter_passes_the_check(status: str) -> None:
    driver, rekognition = adapter_hooks(status)
    assert driver.prepare(driver._settings) == driver._settings
    assert [op for op, _ in rekognition.calls] == ["DescribeProjects", "DescribeProjectVersions"]


@pytest.mark.parametrize(
    ("status", "arn", "reason"),
    [
        (None, ADAPTER, f"adapter {ADAPTER}: no project 'mod' here"),
        ("TRAINING_COMPLETED", ADAPTER.replace("mod.1", "mod.2"), "no such adapter version"),
        ("EXPIRED", ADAPTER, f"adapter {ADAPTER} is EXPIRED: DetectModerationLabels would not use it"),
        ("TRAINING_IN_PROGRESS", ADAPTER, "is TRAINING_IN_PROGRESS"),
    ],
)
def test_an_adapter_missing_or_not_usable_stops_the_run(status: str | None, arn: str, reason: str) -> None:
    driver, _ = adapter_hooks(status, arn)
    with pytest.raises(ConfigError, match=r"^analyses\.moderation\.project_version: ") as raised:
        driver.prepare(driver._settings)
    assert reason in str(raised.value)


def test_moderation_without_an_adapter_checks_nothing() -> None:
    setup = DriverSetup(RunConfig(), moderation.Settings(), s3=None, store=None, dry_run=False)
    assert type(moderation.ANALYSIS.driver(setup)).__name__ == "DriverHooks"
