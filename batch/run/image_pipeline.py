"""One image through the job: read its header, send it as planned (or refuse it before any call), run
its analyses one after the other, and build its rows. Never raises for a bad image: each image ends as
one `images` row (analysed, rejected, failed or skipped) plus its result rows and error rows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.base import ImageInput
from batch.analyses.registry import REGISTRY
from batch.aws.image_source import pixels_once, prepare_image
from batch.aws.s3 import read_header
from batch.core.calls import Call
from batch.core.image_checks import Refusal
from batch.core.retry import IMAGE_ERRORS, Outcome, error_code
from batch.core.selection import ListedObject
from batch.core.tables import error_row, image_row
from batch.run.context import RunContext

__all__ = ["ImageResult", "analyse_image"]


@dataclass
class ImageResult:
    """One image's rows: its `images` row, its result rows by table, its `errors` rows."""

    image_row: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]
    errors: list[dict[str, Any]]
    #: One-line reason when an error says the whole run cannot succeed (e.g. AccessDeniedException).
    fatal: str | None = None
    #: Analyses that failed but settled some of their parts: name -> positions among the parts run.
    settled_parts: dict[str, tuple[int, ...]] = field(default_factory=dict)


def analyse_image(
    obj: ListedObject,
    context: RunContext,
    call: Call,
    s3: Any,
    stop: threading.Event,
    *,
    analyses: tuple[str, ...],
    parts: Mapping[str, tuple[int, ...]] | None = None,
) -> ImageResult:
    """Probe one image's header, send it as planned (or refuse it before any call), run `analyses`
    in the order given (`batch.analyses.registry.in_run_order`) through `call`, and build its rows.
    `stop` is set by an image whose error ends the run; the other images then stop before their next
    analysis."""
    common = {"run_id": context.run_id, "bucket": context.bucket, "key": obj.key, "etag": obj.etag}
    result = ImageResult(image_row={}, rows={}, errors=[])
    facts: dict[str, Any] = {"size_bytes": obj.size, "last_modified": obj.last_modified}
    try:
        header = read_header(s3, context.bucket, obj)
        prepared = prepare_image(s3, context.bucket, context.rekognition, obj, header)
    except (ClientError, BotoCoreError) as exc:
        # Deleted or replaced since the listing (the reads are pinned to the listed ETag), or S3 down.
        code = error_code(exc)
        result.errors.append(
            error_row(common, code=code, message=str(exc)[:500], operation="GetObject", attempts=1)
        )
        result.image_row = image_row(common, **facts, status="failed", reason=f"S3 read failed: {code}")
        return result
    if isinstance(prepared, Refusal):
        # Not sent: the header (or the conversion) already shows Rekognition would refuse it.
        result.errors.append(error_row(common, code=prepared.code, message=prepared.reason))
        result.image_row = image_row(
            common, **facts, header=header, status=prepared.status, reason=prepared.code
        )
        return result

    succeeded: list[str] = []
    status, reason = "analysed", None
    pixels = pixels_once(prepared.image, s3, context.bucket, obj)
    for name in analyses:
        if stop.is_set():
            status, reason = "failed", "run aborted"
            break
        analysis, settings = REGISTRY[name], context.analysis_settings[name]
        if parts and name in parts:  # only the parts not settled yet
            settings = analysis.only_parts(settings, parts[name])
        source = ImageInput(prepared.image, pixels, prepared.frame.box_placement, result.rows, obj.key)
        outcome = analysis.run(source, settings, call)
        shared = {**common, **analysis.shared_columns(settings)}
        for table, rows in outcome.rows.items():
            result.rows.setdefault(table, []).extend({**shared, **row} for row in rows)
        if outcome.failed is None:
            succeeded.append(name)
            continue
        if outcome.settled_parts:
            result.settled_parts[name] = outcome.settled_parts
        operation, failure = outcome.failed
        result.errors.append(
            error_row(
                common,
                code=failure.error_code,
                message=failure.message,
                analysis=name,
                operation=operation,
                attempts=failure.attempts,
                retryable=bool(failure.outcome and failure.outcome.retryable),
            )
        )
        if failure.outcome is Outcome.FATAL or failure.budget_exhausted:
            result.fatal = f"{operation}: {failure.error_code}: {failure.message}"
            if failure.budget_exhausted:
                result.fatal = f"Rekognition keeps failing, retry budget spent; last error {result.fatal}"
            stop.set()
            status, reason = "failed", failure.error_code
            break
        if failure.error_code in IMAGE_ERRORS and analysis.rejects_image:
            # The image itself is unusable: the other analyses would fail the same way.
            status, reason = "rejected", failure.error_code
            break
        status, reason = "failed", failure.error_code
    # The row lists them in the run's order, whatever order this image ran them in.
    succeeded.sort(key=context.analyses.index)
    result.image_row = image_row(
        common,
        **facts,
        header=prepared.header,
        status=status,
        reason=reason,
        analyses=succeeded,
        sent=prepared.sent,
    )
    return result
