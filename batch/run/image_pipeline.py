"""One image through the job: read its header, send it as planned (or refuse it before any call), run
its analyses one after the other, and build its rows. Never raises for a bad image: each image ends as
one `images` row (analysed, rejected, failed, skipped or changed) plus its result rows and error rows.

Results describe the ETag they carry. Every read is pinned to the listed ETag, and a reference to the
version the header read returned (a bucket that keeps versions). On a bucket without versions
Rekognition reads the object by name at each call, so after the image's calls one HeadObject
(`If-Match`) confirms the ETag; if the object changed meanwhile (or a pinned read found it changed),
the image is `changed`: its result rows are dropped, one `ObjectChanged` error row says why, and
nothing is settled, so the next run analyses the new version.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.base import ImageInput, SentImage
from batch.analyses.registry import REGISTRY
from batch.aws.image_source import PreparedImage, pixels_once, prepare_image
from batch.aws.s3 import read_header, unchanged
from batch.config.model import RekognitionConfig
from batch.core.calls import Call
from batch.core.image_checks import Refusal
from batch.core.redaction import one_line
from batch.core.retry import IMAGE_ERRORS, Outcome, error_code
from batch.core.selection import ListedObject
from batch.core.tables import error_row, image_row
from batch.run.context import RunContext

__all__ = ["OBJECT_CHANGED", "ImageResult", "analyse_image", "is_changed_code", "silence_reason"]

#: The error code (and `images.status_reason`) of an image whose object changed while the run read it.
OBJECT_CHANGED = "ObjectChanged"
#: What S3 answers a read pinned to a version that is no longer there: overwritten (412), deleted.
_CHANGED_CODES = frozenset({"PreconditionFailed", "412", "NoSuchKey", "404", "NoSuchVersion"})


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
    #: Analyses not called because the image breaks their own limits (`Analysis.limits`): settled.
    refused: list[str] = field(default_factory=list)


def analyse_image(
    obj: ListedObject,
    context: RunContext,
    call: Call,
    s3: Any,
    stop: threading.Event,
    *,
    analyses: tuple[str, ...],
    parts: Mapping[str, tuple[int, ...]] | None = None,
    regional: Mapping[str, Call] | None = None,
    region: str | None = None,
) -> ImageResult:
    """Probe one image's header, send it as planned (or refuse it before any call), run `analyses`
    in the order given (`batch.analyses.registry.in_run_order`) through `call`, and build its rows.
    With several regions (`context.regions`), the stateless analyses call through `regional[region]`
    of the image's region (`region` as the driver placed it, else its own), the image sent as bytes
    when its bucket is elsewhere. `stop` is set by an image whose error ends the run; the other
    images then stop before their next analysis."""
    common = _common_columns(context, obj)
    facts: dict[str, Any] = {"size_bytes": obj.size, "last_modified": obj.last_modified}
    region, rekognition = _region(context, obj, region)
    try:
        header, obj = read_header(s3, context.bucket, obj)
        shortest = min(REGISTRY[name].min_side_px for name in analyses)  # ppe reads 64 px sides
        prepared = prepare_image(s3, context.bucket, rekognition, obj, header, min_side_px=shortest)
    except (ClientError, BotoCoreError) as exc:
        # Deleted or replaced since the listing (the reads are pinned to the listed ETag), or S3 down.
        return _unread(common, facts, exc, "GetObject")
    if isinstance(prepared, Refusal):
        # Not sent: the header (or the conversion) already shows Rekognition would refuse it.
        refused = image_row(common, **facts, header=header, status=prepared.status, reason=prepared.code)
        return ImageResult(refused, {}, [error_row(common, code=prepared.code, message=prepared.reason)])
    facts.update(header=prepared.header, sent={**prepared.sent, "sent_region": region})
    stateless = (regional or {}).get(region or "", call)
    try:
        result, called = _analysed(
            obj,
            prepared,
            context,
            calls=(call, stateless),
            s3=s3,
            stop=stop,
            analyses=analyses,
            parts=parts or {},
        )
    except (ClientError, BotoCoreError) as exc:  # reading the pixels of an image sent as a reference
        return _unread(common, facts, exc, "GetObject")
    result.image_row = image_row(common, **facts, **result.image_row)
    if called and "S3Object" in prepared.image and obj.version is None:
        return _confirmed(result, common, facts, s3, obj)
    return result


def _analysed(
    obj: ListedObject,
    prepared: PreparedImage,
    context: RunContext,
    *,
    calls: tuple[Call, Call],
    s3: Any,
    stop: threading.Event,
    analyses: tuple[str, ...],
    parts: Mapping[str, tuple[int, ...]],
) -> tuple[ImageResult, bool]:
    """Run the image's analyses, each through `calls` (the run's region's, the image's region's for
    an analysis that fans out); the result's `image_row` holds only the outcome (status, reason,
    analyses). True if any analysis ran (the run was not aborted before the image's first)."""
    common = _common_columns(context, obj)
    result = ImageResult(image_row={}, rows={}, errors=[])
    succeeded: list[str] = []
    status, reason, called = "analysed", None, False
    pixels = pixels_once(prepared.image, s3, context.bucket, obj)
    for name in analyses:
        if stop.is_set():
            status, reason = "failed", "run aborted"
            break
        analysis, settings = REGISTRY[name], context.analysis_settings[name]
        refusal = analysis.refusal(_sent_image(obj, prepared))
        if refusal is not None:  # outside this analysis's own limits: no call, the others go on
            result.errors.append(
                error_row(
                    common,
                    code=refusal.code,
                    message=refusal.reason,
                    analysis=name,
                    operation=analysis.operation,
                )
            )
            result.refused.append(name)
            continue
        if name in parts:  # only the parts not settled yet
            settings = analysis.only_parts(settings, parts[name])
        source = ImageInput(prepared.image, pixels, prepared.frame.box_placement, result.rows, obj.key)
        analysis_call = calls[1] if analysis.fans_out_with(settings) else calls[0]
        outcome, called = analysis.run(source, settings, analysis_call), True
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
        if failure.outcome is Outcome.FATAL or failure.budget_exhausted or failure.silent:
            result.fatal = f"{operation}: {failure.error_code}: {failure.message}"
            if failure.silent:
                result.fatal = f"{silence_reason(context)}; last error {result.fatal}"
            elif failure.budget_exhausted:
                result.fatal = f"Rekognition keeps failing, retry budget spent; last error {result.fatal}"
            stop.set()
            status, reason = "failed", failure.error_code
            break
        if failure.error_code in IMAGE_ERRORS and (analysis.rejects_image or outcome.image_call):
            # The image itself is unusable: the other analyses would fail the same way.
            status, reason = "rejected", failure.error_code
            break
        status, reason = "failed", failure.error_code
    if status == "analysed" and result.refused and not succeeded:  # every analysis refused it
        status, reason = "rejected", result.errors[0]["error_code"]
    # The row lists them in the run's order, whatever order this image ran them in.
    succeeded.sort(key=context.analyses.index)
    result.image_row = {"status": status, "reason": reason, "analyses": succeeded}
    return result, called


def _region(
    context: RunContext, obj: ListedObject, placed: str | None
) -> tuple[str | None, RekognitionConfig]:
    """The region of the image's stateless calls (`placed`, else its own; None: no plan), and how to
    send it there: as bytes when its bucket is in another region."""
    plan = context.regions
    if plan is None:
        return None, context.rekognition
    region = placed or plan.region_for(obj.key, obj.etag, obj.size)
    if plan.as_bytes(region):
        return region, dataclasses.replace(context.rekognition, image_source="bytes")
    return region, context.rekognition


def _sent_image(obj: ListedObject, prepared: PreparedImage) -> SentImage:
    """The image as Rekognition gets it: a converted copy's own size, else the stored one."""
    as_bytes = "Bytes" in prepared.image
    size = len(prepared.image["Bytes"]) if as_bytes else obj.size
    width = prepared.sent.get("sent_width", prepared.header.stored_width)
    height = prepared.sent.get("sent_height", prepared.header.stored_height)
    return SentImage(width, height, size, as_bytes)


def _common_columns(context: RunContext, obj: ListedObject) -> dict[str, Any]:
    """The columns every row of the image starts with: its run, bucket, key and listed ETag."""
    return {"run_id": context.run_id, "bucket": context.bucket, "key": obj.key, "etag": obj.etag}


def _confirmed(
    result: ImageResult, common: dict[str, Any], facts: dict[str, Any], s3: Any, obj: ListedObject
) -> ImageResult:
    """`result` if the object is still the listed ETag after the image's calls (one HeadObject), else
    the image as `changed`; `failed` when S3 cannot say (nothing is claimed that was not confirmed)."""
    try:
        if unchanged(s3, common["bucket"], obj):
            return result
    except (ClientError, BotoCoreError) as exc:
        dropped = _unread(common, facts, exc, "HeadObject")
    else:
        dropped = _changed(common, facts, "HeadObject", "the ETag differs (or the key is gone)")
    dropped.fatal = result.fatal
    return dropped


def _unread(common: dict[str, Any], facts: dict[str, Any], exc: Exception, operation: str) -> ImageResult:
    """The image when a read of its object failed: `changed` if S3 said the listed version is gone,
    else `failed` (S3 down, access denied...), with no result rows either way."""
    code = error_code(exc)
    if is_changed_code(code):
        return _changed(common, facts, operation, f"S3 answered {code}")
    row = error_row(common, code=code, message=one_line(str(exc)), operation=operation, attempts=1)
    return ImageResult(
        image_row(common, **facts, status="failed", reason=f"S3 read failed: {code}"), {}, [row]
    )


def is_changed_code(code: str) -> bool:
    """Does S3's error `code` on a pinned read say the listed version is gone (the image `changed`)?"""
    return code in _CHANGED_CODES


def _changed(common: dict[str, Any], facts: dict[str, Any], operation: str, why: str) -> ImageResult:
    message = (
        f"the object changed while the run read it ({operation} pinned to ETag {common['etag']}: {why}); "
        "its results are dropped and the next run analyses the new version"
    )
    row = error_row(common, code=OBJECT_CHANGED, message=message, operation=operation, attempts=1)
    return ImageResult(image_row(common, **facts, status="changed", reason=OBJECT_CHANGED), {}, [row])


def silence_reason(context: RunContext) -> str:
    """Why a run against an endpoint that stopped answering aborts."""
    seconds = context.rekognition.silent_abort_seconds
    return f"Rekognition answered no call for {seconds:g} s (rekognition.silent_abort_seconds)"
