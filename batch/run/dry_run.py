"""The dry run's count: which planned images a run would send, and what their calls would cost.

Without `--probe` it is an upper bound: every planned image that is not empty counts as sent, though
its header may show that the run would refuse it. With `--probe` each header is read as the run reads
it (one ranged GET of 64 KiB pinned to the listed ETag, `batch.aws.s3.read_header`) and judged by the
run's own checks (`batch.aws.image_source.image_route`, and each analysis's own limits, e.g. `ppe`'s),
on `PROBE_THREADS` threads, with no Rekognition call: the count of images sent is exact, and the refused
ones are counted by reason.
Rekognition may still refuse a file damaged past its header (the job never decodes a JPEG or PNG it
sends as stored), and a conversion a file it cannot decode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.base import DriverHooks, SentImage
from batch.analyses.registry import REGISTRY
from batch.aws.image_source import image_route
from batch.aws.s3 import read_header, s3_client
from batch.config.model import RunConfig
from batch.core.image_checks import EMPTY_OBJECT, Refusal, Route
from batch.core.redaction import one_line
from batch.core.retry import error_code
from batch.core.selection import ListedObject
from batch.run.context import ImageToAnalyse
from batch.run.image_pipeline import OBJECT_CHANGED, is_changed_code
from batch.run.summary import RunSummary

__all__ = ["PROBE_THREADS", "count_planned", "probed"]

#: Header reads in flight in a probing dry run: each is one small GET, so the driver's threads wait
#: on S3, not on the CPU (measured on the demo: docs/design/dry-run.md).
PROBE_THREADS = 16

_EMPTY = Refusal("skipped", EMPTY_OBJECT, "zero-byte object")

#: A probe's verdict on one image: not sent, or sent as this; None: not probed (sent, limits unknown).
Verdict = Refusal | SentImage | None


def count_planned(
    config: RunConfig,
    s3: Any,
    summary: RunSummary,
    hooks: Mapping[str, DriverHooks],
    images: Iterable[ImageToAnalyse],
) -> None:
    """Count the planned `images` into `summary`: the sent ones' calls and cost, the refused ones by
    status and reason (only the empty ones unless `config.probe`)."""
    summary.dry_run = "probed" if config.probe else "bound"
    if config.probe:
        client = s3_client(max_pool_connections=PROBE_THREADS)
        judged = probed(images, lambda obj: probe_image(config, client, obj), PROBE_THREADS)
    else:
        judged = ((image, _EMPTY if image.obj.size == 0 else None) for image in images)
    for image, verdict in judged:
        refusal = verdict if isinstance(verdict, Refusal) else None
        own = _own_refusals(image, verdict) if isinstance(verdict, SentImage) else {}
        if refusal is None and own and len(own) == len(image.analyses):
            refusal = next(iter(own.values()))  # every analysis refuses it: the run rejects it
        for name in image.analyses:
            hooks[name].planned(image.obj.key, sent=refusal is None and name not in own)
        if refusal is not None:
            summary.images[refusal.status] += 1
            summary.refused[refusal.code] += 1
            continue
        summary.images["to_analyse"] += 1
        for name in image.analyses:
            if name in own:
                continue
            analysis, settings = REGISTRY[name], config.analysis_settings[name]
            if name in image.parts:
                settings = analysis.only_parts(settings, image.parts[name])
            calls = analysis.planned_calls(settings)
            summary.add_planned(analysis.operation, calls, calls * config.prices[name])


def _own_refusals(image: ImageToAnalyse, sent: SentImage) -> dict[str, Refusal]:
    """The analyses of `image` that would not call for it, by their own limits (probed images only)."""
    refusals = {name: REGISTRY[name].refusal(sent) for name in image.analyses}
    return {name: refusal for name, refusal in refusals.items() if refusal is not None}


def probe_image(config: RunConfig, s3: Any, obj: ListedObject) -> Refusal | SentImage:
    """Why the run would not send this image, from its header read as the run reads it; else the
    image as it would be sent (its size unknown for a converted copy: no analysis's limits apply)."""
    try:
        header, obj = read_header(s3, config.bucket, obj)
    except (ClientError, BotoCoreError) as exc:
        code = error_code(exc)
        if is_changed_code(code):
            return Refusal("changed", OBJECT_CHANGED, f"S3 answered {code}")
        return Refusal("failed", code, one_line(str(exc)))
    shortest = min(REGISTRY[name].min_side_px for name in config.analyses)  # ppe reads 64 px sides
    route = image_route(config.rekognition, obj, header, shortest)
    if isinstance(route, Refusal):
        return route
    if route is Route.CONVERTED_JPEG:
        return SentImage(None, None, 0, as_bytes=True)
    return SentImage(header.stored_width, header.stored_height, obj.size, as_bytes=route is Route.BYTES)


def probed(
    images: Iterable[ImageToAnalyse], probe: Callable[[ListedObject], Verdict], threads: int
) -> Iterator[tuple[ImageToAnalyse, Verdict]]:
    """Each image with its probe's verdict, in the order given; `threads` probes at a time, reading
    the stream at most a few windows ahead (a listing of millions is never held whole)."""
    window: deque[tuple[ImageToAnalyse, Future[Verdict]]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="probe") as pool:
        for image in images:
            window.append((image, pool.submit(probe, image.obj)))
            if len(window) >= 4 * threads:
                first, verdict = window.popleft()
                yield first, verdict.result()
        while window:
            first, verdict = window.popleft()
            yield first, verdict.result()
