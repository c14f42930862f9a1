"""The analysis protocol: what the job needs of one analysis, with a default for every hook.

An analysis module defines `ANALYSIS`, an `Analysis` (or a subclass overriding hooks), and the registry
lists it (`batch.analyses.registry`). The worker calls `run` for every analysis; the driver calls the
driver-side hooks (`check`, `driver`) and never names an analysis.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batch.core.calls import Call, CallResult
from batch.core.geometry import BoxPlacement
from batch.core.image_checks import MIN_SIDE_PX, AnalysisLimits, Refusal, limits_refusal
from batch.core.manifest import FileEntry

if TYPE_CHECKING:
    from batch.config.model import RunConfig

__all__ = [
    "Analysis",
    "DriverHooks",
    "DriverReport",
    "DriverSetup",
    "ImageInput",
    "MultiOutcome",
    "SentImage",
]

#: A module's `flatten`: rows per table (without the common columns) of one answer.
Flatten = Callable[[Mapping[str, Any], BoxPlacement], dict[str, list[dict[str, Any]]]]


@dataclass(frozen=True)
class ImageInput:
    """One image as an analysis's `run` sees it."""

    #: The request's `Image` member ({"S3Object": ...} or {"Bytes": ...}).
    image: Mapping[str, Any]
    #: The bytes of the image as sent (read on first use): the source of face crops.
    pixels: Callable[[], bytes]
    #: The box placement for a response with this `OrientationCorrection` (None: none).
    placement: Callable[[str | None], BoxPlacement]
    #: Rows this image's earlier analyses of the run produced, by table (with their common columns).
    earlier: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The image's S3 key (IndexFaces' ExternalImageId is made from it).
    key: str = ""


@dataclass(frozen=True)
class SentImage:
    """What an analysis's own limits (`Analysis.limits`) are checked against: the image as sent."""

    #: Its size in pixels (a converted copy's own); None: unknown.
    width: int | None
    height: int | None
    #: Its bytes: `Image.Bytes` when `as_bytes`, else the S3 object's listed size.
    size: int
    as_bytes: bool


@dataclass
class MultiOutcome:
    """Rows by table (without the common columns), and the first call that failed (then stop)."""

    rows: dict[str, list[dict[str, Any]]]
    #: (operation, result) of the failed call; None when every call answered.
    failed: tuple[str, CallResult] | None = None
    #: After a failed call, for an analysis settled part by part (`Analysis.parts`): the positions of
    #: the parts whose calls all answered, settled despite the failure.
    settled_parts: tuple[int, ...] = ()
    #: The failed call sent the image itself, alone (face search's DetectFaces of the whole image): an
    #: image error from it rejects the image, whatever `Analysis.rejects_image` says of its other calls.
    image_call: bool = False


@dataclass(frozen=True)
class DriverSetup:
    """What the driver hands an analysis's `driver` hook: the run and the clients, passed in."""

    config: RunConfig
    settings: Any
    s3: Any
    #: The output's `batch.storage.commits.RunStore`; None in a dry run without an output.
    store: Any
    dry_run: bool
    #: True once SIGINT or SIGTERM asked the run to stop: a hook that waits (a model starting) gives up.
    stopping: Callable[[], bool] = lambda: False
    #: Each operation's quota as the run resolved it in its own region (`batch.run.quotas`: set, else
    #: read from Service Quotas), for the driver's own calls (`batch.aws.rekognition.driver_caller`).
    quotas: Mapping[str, float] = field(default_factory=dict)
    #: The run's id ("" in a dry run), for what a hook records under the output.
    run_id: str = ""


@dataclass
class DriverReport:
    """What an analysis's driver-side work did, for the summary, the `runs` row and the JSON."""

    #: Calls by (operation, outcome); a dry run's planned ones as (operation, "planned").
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: The same, for calls priced apart from the image calls (`storage_cost_usd`).
    storage_calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Calls priced with the image calls (`estimated_cost_usd`), e.g. the references' DetectFaces.
    image_cost_usd: float = 0.0
    #: Calls priced apart (`storage_cost_usd`), e.g. keeping a face collection in sync.
    storage_cost_usd: float = 0.0
    #: Fields of the JSON summary (`Analysis.summary_fields` names them all, with their defaults).
    fields: dict[str, Any] = field(default_factory=dict)
    #: Lines of the summary printed for people.
    lines: list[str] = field(default_factory=list)
    #: A dry run's lines after its cost line (what a run would do beyond the image calls).
    forecast_lines: list[str] = field(default_factory=list)
    #: What a dry run called (e.g. "DescribeCollection and ListFaces only"); "" for nothing.
    dry_run_called: str = ""
    #: Rows the driver made, by table of the analysis (without `run_id`), committed with the run's
    #: `runs` row (user_search: `users`, `user_faces`).
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class DriverHooks:
    """What an analysis does in the driver around the batches. Every hook does nothing by default.

    Order: `prepare` (before the attempt: may resolve the settings), `start` (the attempt is claimed),
    `listed` for every listed key and `listing_ended`, `planned` (dry run) or `before_batch` (run) for
    the images that need the analysis, `finish` after the batches, then `report`; `close` in every
    case, also after an error or a signal.
    """

    def prepare(self, settings: Any) -> Any:
        """The settings the run uses (compare_faces: its references resolved)."""
        return settings

    def start(self, kept: Sequence[FileEntry]) -> None:
        """The run is about to plan; `kept`: the files of batches a resumed run keeps."""

    def unsettled(self) -> Iterable[tuple[str, str]]:
        """(key, ETag) of images to analyse again although a committed run settled them."""
        return ()

    def listed(self, key: str) -> None:
        """The listing showed `key`."""

    def listing_ended(self) -> None:
        """Every listed key went through `listed`."""

    def planned(self, key: str, *, sent: bool) -> None:
        """Dry run: an image a run would analyse (`sent`: not zero bytes)."""

    def before_batch(self, keys: Sequence[str]) -> None:
        """Before a batch is submitted: the keys of its images that need this analysis."""

    def finish(self, *, completed: bool) -> None:
        """After the batches; `completed`: the run went through (it will commit)."""

    def close(self) -> DriverReport | None:
        """Whatever the run's outcome, last: undo what must not outlive the run (a model it started)
        if `finish` did not; a report of what that did, for a run that ended early, or None."""
        return None

    def report(self) -> DriverReport:
        return DriverReport()


@dataclass(frozen=True)
class Analysis:
    """One Rekognition analysis: what it calls, its settings and tables, and the hooks the job calls.

    The fields describe one call per image (`build_request` + `flatten`), which the default `run`
    makes. An analysis that calls more (face search, comparison) or works in the driver (collections,
    references) is a subclass overriding the hooks.
    """

    name: str
    operation: str
    client_method: str
    settings_type: type[Any]
    tables: Mapping[str, pa.Schema]
    build_request: Callable[[Mapping[str, Any], Any], dict[str, Any]]
    flatten: Flatten
    #: The answer's member giving its `OrientationCorrection`; None: the operation has none.
    orientation_field: str | None
    #: Every operation it may call (rate limited and priced as the analysis); () = (operation,).
    extra_operations: tuple[str, ...] = ()
    #: Analyses that run before this one for the same image when both are asked for (their rows are read).
    after: tuple[str, ...] = ()
    #: US dollars per successful call at list price: the `[pricing]` default.
    price: float = 0.001
    #: An image error (e.g. InvalidImageFormatException) from its calls means the image is unusable.
    rejects_image: bool = True
    #: The dry run's count of calls per image is a lower bound (calls per face).
    calls_at_least: bool = False
    #: `--prune` applies: the analysis keeps state outside the output (a face collection).
    prunes: bool = False
    #: Its calls change or read state outside the image (a face collection), which a resumed run syncs
    #: again: a resumed attempt calls again rather than take an earlier attempt's answers.
    stateful: bool = False
    #: Its operation's own image limits, checked before its call (an image outside them gets an error
    #: row for this analysis, no call, and is settled for it); None: Rekognition's general ones only.
    limits: AnalysisLimits | None = None
    #: Its calls are stateless (no collection, the image alone): with `rekognition.regions` they go to
    #: the image's region of the run's regions (`batch.core.regions`); False: always the run's region.
    fans_out: bool = False

    @property
    def operations(self) -> tuple[str, ...]:
        """Every operation this analysis may call, its main one first."""
        return (self.operation, *self.extra_operations)

    def fans_out_with(self, settings: Any) -> bool:
        """Whether its calls with these settings go to the image's region (`fans_out`); a request that
        names a resource of the run's region (a moderation adapter) stays there."""
        return self.fans_out

    def run(self, image: ImageInput, settings: Any, call: Call) -> MultiOutcome:
        """Analyse one image: one call, and its rows with boxes placed upright."""
        result = call(self.client_method, self.operation, self.request(image.image, image.key, settings))
        if result.response is None:
            return MultiOutcome({}, failed=(self.operation, result))
        placement = image.placement(self.orientation_correction(result.response))
        return MultiOutcome(self.flatten(result.response, placement))

    def request(self, image: Mapping[str, Any], key: str, settings: Any) -> dict[str, Any]:
        """The keyword arguments of the boto3 call for the image stored under `key`."""
        return self.build_request(image, settings)

    def shared_columns(self, settings: Any) -> dict[str, Any]:
        """The columns every row of this analysis shares under `settings` (most analyses: none)."""
        return {}

    def settings_document(self, settings: Any) -> dict[str, Any]:
        """The settings as `settings_digest` and the config digest see them (JSON-ready)."""
        return dataclasses.asdict(settings)

    def parts(self, settings: Any) -> list[dict[str, Any]] | None:
        """The settings split into parts an image is settled for one by one (compare_faces: one per
        reference photo), as JSON-ready documents; None: the analysis is settled whole."""
        return None

    def only_parts(self, settings: Any, indices: tuple[int, ...]) -> Any:
        """`settings` narrowed to the parts at `indices` (of `parts(settings)`)."""
        raise TypeError(f"{self.name} has no parts")

    def planned_calls(self, settings: Any) -> int:
        """Calls of the main operation one image costs at least (the dry run's count)."""
        return 1

    def default_settings(self) -> Any:
        """The settings when the config says nothing about this analysis."""
        return self.settings_type()

    def check(self, settings: Any) -> None:
        """Raise ConfigError when `settings` cannot run (checked once the run asks for the analysis)."""

    def extra_prices(self) -> dict[str, float]:
        """`[pricing]` keys besides the analysis's own, with their list prices."""
        return {}

    def summary_fields(self) -> dict[str, Any]:
        """The JSON summary's fields this analysis's `DriverReport` fills, with their defaults."""
        return {}

    def driver(self, setup: DriverSetup) -> DriverHooks:
        """The driver-side hooks of one run (most analyses: none)."""
        return DriverHooks()

    @property
    def min_side_px(self) -> int:
        """The shortest side its operation reads: its own limit, else Rekognition's (80 px)."""
        own = self.limits.min_side_px if self.limits is not None else None
        return MIN_SIDE_PX if own is None else own

    def refusal(self, sent: SentImage) -> Refusal | None:
        """Why this analysis does not call for the image as sent (its own `limits`, and Rekognition's
        80 px minimum when another analysis of the image let a smaller one through), or None."""
        limits = dataclasses.replace(self.limits or AnalysisLimits(), min_side_px=self.min_side_px)
        width, height = sent.width, sent.height
        return limits_refusal(limits, self.operation, width, height, sent.size, as_bytes=sent.as_bytes)

    def orientation_correction(self, response: Mapping[str, Any]) -> str | None:
        """The response's OrientationCorrection (None for operations without one)."""
        if self.orientation_field is None:
            return None
        return response.get(self.orientation_field)
