"""The HTML run report: one self-contained file per run, to look at a run before querying it.

    rekbatch report RUN_ID --output DEST [--to FILE]        (and at the end of every run, by default)

Written to `DEST/_reports/<run_id>.html`, a folder the table readers skip. It opens offline: no script,
every chart and thumbnail a data: URI, and a Content-Security-Policy that forbids any other request. It
shows the `runs` row and final errors by code, calls per second per operation against its quota
(`call_seconds`), the distributions of labels, moderation labels, celebrities, faces and confidences, and
a gallery of analysed and failed images with their boxes (upright `box_*` columns). Thumbnails are read
through the job's S3 client, each image once, pinned to the ETag the run saw. The page stays under
`report.max_bytes`: summary and charts first, then gallery tiles in their order while they fit.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from botocore.exceptions import BotoCoreError, ClientError
from markupsafe import Markup
from PIL import Image

from batch import __version__
from batch.analyses.registry import all_tables
from batch.aws.s3 import read_object
from batch.config.model import OutputConfig, ReportConfig
from batch.core.calls import PAID_OUTCOMES
from batch.core.manifest import error_rate
from batch.core.retry import error_code
from batch.core.timeline import OK, rate_series
from batch.report.charts import Chart, bar_chart, calls_chart, confidence_chart, faces_chart, rendering
from batch.report.data import RunTables, load_run
from batch.report.stats import (
    CONFIDENCE_BINS,
    STATS_COLUMNS,
    BoxLayer,
    DrawnBox,
    GallerySample,
    ImageEntry,
    RunStats,
    box_layers,
    boxes_of,
    entries,
)
from batch.report.thumbnails import ThumbnailError, upright_thumbnail
from batch.storage.sink import Destination

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: The reports' folder under the output: a leading `_`, so pyarrow and Spark skip it.
REPORTS_FOLDER = "_reports"
#: Images with an error listed in the gallery at most (spread over their error codes).
MAX_ERROR_TILES = 1000
#: Images larger than this are not read for a thumbnail (the job converts files up to 50 MB).
MAX_PICTURE_BYTES = 50_000_000
#: Images read and shrunk at once.
FETCH_THREADS = 8
#: The calls chart's rates are means over this many seconds: enough that the limiter's slack (a token
#: used up to 0.25 s late, a call's latency) weighs little against the quota (rate-limiter.md).
RATE_WINDOW_SECONDS = 10
#: Room kept for the gallery's counts and links, which are known only once the tiles are chosen.
SLACK_BYTES = 2_000

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("batch.report", "templates"),
    autoescape=True,  # keys, labels and messages come from the bucket and the service
    undefined=jinja2.StrictUndefined,
)

#: Reads one listed image's bytes (`s3_image_reader`; a test passes its own).
ImageReader = Callable[[ImageEntry], bytes]


def report_path(run_id: str) -> str:
    """Where a run's report goes, relative to the output."""
    return f"{REPORTS_FOLDER}/{run_id}.html"


def write_report(
    output: str,
    run_id: str,
    settings: ReportConfig,
    s3_client: Any,
    *,
    to: str | None = None,
    output_options: OutputConfig | None = None,
) -> str:
    """Write run `run_id`'s report to `to`, else to `<output>/_reports/<run_id>.html`; return where.
    `output_options` gives the S3 encryption of the report (default: the bucket's).

    Raises RunNotFound or OutputUnreadable (one-line reasons) when the run's tables cannot be read.
    """
    tables = load_run(output, run_id, s3_client)
    html = build_report(tables, settings, s3_image_reader(s3_client, tables.run["bucket"])).encode("utf-8")
    if to:
        path = Path(to)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(html)
        return str(path)
    destination = Destination.for_output(output, output_options or OutputConfig())
    destination.publish(report_path(run_id), html, s3_client)
    return destination.location(report_path(run_id))


def s3_image_reader(s3_client: Any, bucket: str) -> ImageReader:
    def read(entry: ImageEntry) -> bytes:
        return read_object(s3_client, bucket, entry.listed)

    return read


def build_report(
    tables: RunTables,
    settings: ReportConfig,
    read_image: ImageReader,
    *,
    generated_at: datetime | None = None,
) -> str:
    """The report's HTML for one run, at most `settings.max_bytes` long (UTF-8) when that can be."""
    stats, gallery = collect(tables, settings.thumbnails)
    analysed, with_errors = gallery.chosen()
    schemas = all_tables()
    layers = box_layers({name: schemas[name] for name in tables.parts if name in schemas})
    boxes, errors = image_details(tables, layers, [*analysed, *with_errors])
    with rendering():
        charts = draw_charts(stats, tables.run.get("analyses") or ())
    root = tables.output if tables.output.startswith("s3://") else Path(tables.output).resolve().as_posix()
    context = report_context(tables.run, stats, charts, sql_root=root, generated_at=generated_at)
    context["layers"] = [layer.name for layer in layers]

    def tile_of(entry: ImageEntry) -> Tile:
        return Tile.of(entry, boxes.get(entry.key, []), errors.get(entry.key, []), root, tables.run_id)

    chosen = [("analysed", entry) for entry in analysed] + [("errors", entry) for entry in with_errors]
    tiles = _tiles(chosen, tile_of, read_image, settings.thumbnails)
    page = _Page(context, gallery)
    return page.fit(tiles, settings.max_bytes)


# --- reading ------------------------------------------------------------------------------------------------


def collect(tables: RunTables, thumbnails: int) -> tuple[RunStats, GallerySample]:
    """One pass over the run's tables: the counts, and the gallery's sample."""
    stats, gallery = RunStats(), GallerySample(thumbnails, MAX_ERROR_TILES)
    for table, columns in STATS_COLUMNS.items():
        for part, rows in tables.scan(table, columns):
            stats.add(table, rows)
            if table == "images":
                for entry in entries(rows, part):
                    gallery.offer(entry)
    return stats, gallery


def image_details(
    tables: RunTables, drawn_layers: Sequence[BoxLayer], chosen: Sequence[ImageEntry]
) -> tuple[dict[str, list[DrawnBox]], dict[str, list[dict[str, Any]]]]:
    """The boxes and `errors` rows of the chosen images, by key, read from their parts only."""
    keys_by_part: dict[str, set[str]] = {}
    for entry in chosen:
        keys_by_part.setdefault(entry.part, set()).add(entry.key)
    layers = {layer.table: layer for layer in drawn_layers}
    wanted = [
        (table, part)
        for table in [*layers, "errors"]
        for part in sorted(keys_by_part)
        if part in tables.parts.get(table, {})
    ]
    boxes: dict[str, list[DrawnBox]] = {}
    errors: dict[str, list[dict[str, Any]]] = {}
    for (table, part), rows in tables.read_many(wanted):
        keys = keys_by_part[part]
        if table == "errors":
            for row in rows.to_pylist():
                if row["key"] in keys:
                    errors.setdefault(row["key"], []).append(row)
            continue
        for key, drawn in boxes_of(layers[table], rows, keys).items():
            boxes.setdefault(key, []).extend(drawn)
    return boxes, errors


# --- charts and the summary ---------------------------------------------------------------------------------


def draw_charts(stats: RunStats, analyses: Iterable[str]) -> list[Chart]:
    """The calls chart, then a distribution chart per analysis the run asked for, then confidences."""
    asked = set(analyses)
    charts = [calls_chart(rate_series(stats.timeline, window=RATE_WINDOW_SECONDS), stats.quotas)]
    if "labels" in asked:
        charts.append(bar_chart("labels", "Top labels", stats.top("labels"), "images"))
    if "moderation" in asked:
        charts.append(bar_chart("moderation", "Moderation labels", stats.top("moderation"), "images"))
    if "celebrities" in asked:
        charts.append(bar_chart("celebrities", "Celebrities", stats.top("celebrities"), "appearances"))
    if "faces" in asked:
        charts.append(faces_chart(stats.faces_histogram()))
    charts.append(confidence_chart(stats.confidence, CONFIDENCE_BINS))
    return charts


@dataclass(frozen=True)
class Figure:
    """One summary figure: `value` is exact (the page's `data-value`), `text` is for people."""

    name: str
    label: str
    value: int | float | None
    text: str


def summary_figures(run: Mapping[str, Any]) -> list[Figure]:
    """The headline figures of a `runs` row."""
    figures = [
        # .get: runs committed before a column was added (`images_changed`) read as null in it.
        Figure(name, label, run.get(name) or 0, f"{run.get(name) or 0:,}")
        for name, label in (
            ("images_listed", "images listed"),
            ("images_analysed", "analysed"),
            ("images_rejected", "rejected"),
            ("images_failed", "failed"),
            ("images_skipped", "skipped"),
            ("images_changed", "changed mid-run"),
        )
    ]
    calls = sum(entry["count"] for entry in run["calls"] or [])
    seconds = None
    if run["started_at"] and run["ended_at"]:
        seconds = (run["ended_at"] - run["started_at"]).total_seconds()
    cost = run["estimated_cost_usd"] or 0.0
    storage = run.get("storage_cost_usd")  # null: no collection, or a run from before the column
    # Null in runs from before the columns. Paid: answered with success, or in flight at a crash.
    repeated = sum(c["count"] for c in run.get("repeated_calls") or [] if c["outcome"] in PAID_OUTCOMES)
    repeated_cost = run.get("repeated_cost_usd") or 0.0
    return [
        *figures,
        Figure("calls", "calls", calls, f"{calls:,}"),
        Figure("retries", "retries", run["retries"] or 0, f"{run['retries'] or 0:,}"),
        Figure("throttled", "throttled", run["throttled"] or 0, f"{run['throttled'] or 0:,}"),
        Figure("wall_seconds", "wall time", seconds, "-" if seconds is None else f"{seconds:,.1f} s"),
        Figure("estimated_cost_usd", "estimated cost", cost, f"${cost:,.4f}"),
        Figure("repeated_calls", "calls paid twice", repeated, f"{repeated:,}"),
        Figure("repeated_cost_usd", "cost paid twice", repeated_cost, f"${repeated_cost:,.4f}"),
        *([Figure("storage_cost_usd", "collection calls", storage, f"${storage:,.4f}")] if storage else []),
    ]


def report_context(
    run: Mapping[str, Any],
    stats: RunStats,
    charts: Sequence[Chart],
    *,
    sql_root: str,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The template's variables, except the gallery's (see `_Page`)."""
    by_name = {chart.name: chart for chart in charts}

    def when(value: datetime | None) -> str:
        return value.astimezone(UTC).isoformat(timespec="seconds") if value else "-"

    return {
        "run": {**run, "started_at": when(run["started_at"]), "ended_at": when(run["ended_at"])},
        "badge": status_badge(run),
        "figures": summary_figures(run),
        "calls": sorted(run["calls"] or [], key=lambda c: (c["operation"], c["outcome"] != OK, c["outcome"])),
        "errors": [
            {"code": code, "operation": operation, "count": count}
            for (code, operation), count in stats.errors.most_common()
        ],
        "charts": by_name,
        "distributions": [chart for chart in charts if chart.name != "calls"],
        "run_query": sql_query(sql_root, "runs", run["run_id"]),
        "version": __version__,
        "generated_at": when(generated_at or datetime.now(UTC)),
    }


#: Error rates ((rejected + failed) / images sent) above which the badge turns amber, and red.
BADGE_WARN_RATE, BADGE_BAD_RATE = 0.0, 0.05


def status_badge(run: Mapping[str, Any]) -> dict[str, str]:
    """What the page's badge says at a glance, and its colour (`ok`, `warn`, `bad`) by the error rate:
    "completed", "completed with N rejected and M failed", or the status of a run that did not complete."""
    if run["status"] != "completed":
        return {"text": str(run["status"]), "level": "bad"}
    counts = {status: run[f"images_{status}"] or 0 for status in ("analysed", "rejected", "failed")}
    problems = [f"{counts[what]:,} {what}" for what in ("rejected", "failed") if counts[what]]
    rate = error_rate(counts)
    level = "bad" if rate > BADGE_BAD_RATE else "warn" if rate > BADGE_WARN_RATE else "ok"
    return {"text": "completed" + (f" with {' and '.join(problems)}" if problems else ""), "level": level}


def sql_query(root: str, table: str, run_id: str, key: str | None = None) -> str:
    """A DuckDB query of one table's rows of a run (and of one image), quoted safely."""
    where = f"run_id = {_sql_string(run_id)}"
    if key is not None:
        where += f" AND key = {_sql_string(key)}"
    source = _sql_string(f"{root.rstrip('/')}/{table}/**/*.parquet")
    # For people to paste into DuckDB, never run here; every value is quoted by _sql_string.
    return f"SELECT * FROM read_parquet({source}, hive_partitioning = true)\nWHERE {where};"  # noqa: S608


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- the gallery --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One gallery tile: an image, its picture (or why there is none), its boxes, errors and queries."""

    entry: ImageEntry
    boxes: Sequence[DrawnBox]
    errors: Sequence[Mapping[str, Any]]
    queries: Sequence[tuple[str, str]]
    anchor: str = ""
    picture: str | None = None
    picture_width: int = 0
    picture_height: int = 0
    note: str | None = None

    @classmethod
    def of(
        cls,
        entry: ImageEntry,
        boxes: Sequence[DrawnBox],
        errors: Sequence[Mapping[str, Any]],
        sql_root: str,
        run_id: str,
    ) -> Tile:
        tables = ["images", *sorted({box.table for box in boxes}), *(["errors"] if errors else [])]
        queries = [(table, sql_query(sql_root, table, run_id, entry.key)) for table in tables]
        return cls(entry, boxes, errors, queries)


def why_no_picture(entry: ImageEntry) -> str | None:
    """Why an image is not read for a thumbnail, from its `images` row; None when it may be."""
    if entry.size_bytes == 0:
        return "no picture: a zero-byte object"
    if entry.width is None or entry.stored_pixels is None:
        return "no picture: its header could not be read"
    if entry.size_bytes > MAX_PICTURE_BYTES:
        return f"no picture: {entry.size_bytes:,} bytes is too large to read for a thumbnail"
    if Image.MAX_IMAGE_PIXELS is not None and entry.stored_pixels > Image.MAX_IMAGE_PIXELS:
        return "no picture: too many pixels to decode safely"
    return None


def picture(entry: ImageEntry, read_image: ImageReader) -> dict[str, Any]:
    """The tile fields of an image's thumbnail: its data URI and size, or a note saying why not."""
    try:
        data = read_image(entry)
    except (ClientError, BotoCoreError, OSError) as exc:
        return {"note": f"no picture: reading it failed ({error_code(exc)})"}
    try:
        thumbnail = upright_thumbnail(data, entry.orientation)
    except ThumbnailError as exc:
        return {"note": f"no picture: {exc}"}
    uri = "data:image/jpeg;base64," + base64.b64encode(thumbnail.jpeg).decode("ascii")
    return {"picture": uri, "picture_width": thumbnail.width, "picture_height": thumbnail.height}


def _tiles(
    chosen: Sequence[tuple[str, ImageEntry]],
    tile_of: Callable[[ImageEntry], Tile],
    read_image: ImageReader,
    thumbnails: int,
) -> Iterator[tuple[str, Tile]]:
    """(group, tile) in the gallery's order; the first `thumbnails` of each group get a picture, read
    `FETCH_THREADS` at a time ahead of the page."""
    shown: dict[str, int] = {}
    plans: list[str | None] = []
    for group, entry in chosen:
        shown[group] = shown.get(group, 0) + 1
        limit = None if shown[group] <= thumbnails else "no picture: over the report's thumbnails setting"
        plans.append(limit or why_no_picture(entry))

    def fields(index: int) -> dict[str, Any]:
        plan = plans[index]
        return {"note": plan} if plan else picture(chosen[index][1], read_image)

    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="rekbatch-report-image") as pool:
        for index, extra in enumerate(pool.map(fields, range(len(chosen)))):
            group, entry = chosen[index]
            yield group, dataclasses.replace(tile_of(entry), anchor=f"image-{index + 1}", **extra)


def take_within(items: Iterable[T], size: Callable[[T], int], budget: int) -> list[T]:
    """The longest prefix of `items` whose sizes add up to at most `budget`.

    Stops reading `items` at the first that does not fit: the order is the priority, and the items
    after it are not made (for the gallery: not read from S3).
    """
    taken: list[T] = []
    for item in items:
        budget -= size(item)
        if budget < 0:
            break
        taken.append(item)
    return taken


class _Page:
    """Renders the page around the gallery tiles that fit the size limit."""

    def __init__(self, context: Mapping[str, Any], gallery: GallerySample) -> None:
        self._context = context
        self._gallery = gallery
        self._page = _TEMPLATES.get_template("report.html")
        self._tile = _TEMPLATES.get_template("tile.html").module.tile  # type: ignore[attr-defined]

    def fit(self, tiles: Iterable[tuple[str, Tile]], max_bytes: int) -> str:
        budget = max_bytes - _size(self.render([])) - SLACK_BYTES
        rendered = take_within(
            ((group, tile, self._tile(tile)) for group, tile in tiles), lambda t: _size(t[2]) + 1, budget
        )
        html = self.render(rendered)
        while _size(html) > max_bytes and rendered:
            rendered.pop()
            html = self.render(rendered)
        if _size(html) > max_bytes:
            logger.warning("the report is %d bytes without a gallery, over report.max_bytes", _size(html))
        return html

    def render(self, rendered: Sequence[tuple[str, Tile, Markup]]) -> str:
        analysed = [html for group, _, html in rendered if group == "analysed"]
        with_errors = [(tile, html) for group, tile, html in rendered if group == "errors"]
        anchors: dict[str, str] = {}
        for tile, _ in with_errors:
            for error in tile.errors:
                anchors.setdefault(error["error_code"], tile.anchor)
        notes = {
            "analysed": (
                f"{len(analysed):,} of {self._gallery.analysed.total:,} analysed images, sampled across "
                "formats and Exif orientations."
            ),
            "errors": (
                f"{len(with_errors):,} of {self._gallery.errors.total:,} images that were not analysed"
                " (rejected, failed or skipped), sampled across error codes when there are more; "
                "the others are rows of the images and errors tables."
            ),
        }
        return self._page.render(
            **self._context,
            analysed_tiles=analysed,
            error_tiles=[html for _, html in with_errors],
            error_anchors=anchors,
            gallery_note=notes,
        )


def _size(text: str) -> int:
    return len(text.encode("utf-8"))
