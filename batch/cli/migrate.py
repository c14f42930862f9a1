"""`rekbatch collection migrate SOURCE TARGET --output ROOT`: index the images of SOURCE again into TARGET
with the current face model, and commit their rows as a run does.

The images are planned from the committed rows under ROOT (`batch.faces.migration`), read again from S3
pinned to their committed ETag, and indexed one by one with the job's own image pipeline
(`batch.run.image_pipeline.analyse_image`: the same checks, image source and rows as a run, the
`ExternalImageId` of the key). They are written in batches as a run's are (`finish_batch`: files, then
the batch's record), and committed as one run (`migrate-...`: `runs` row, manifest), so later runs with
`--collection TARGET` find the faces and index nothing again. Before each IndexFaces call, the image's
(key, ETag) is recorded in the run's folder. A second invocation after a crash keeps the complete
batches, takes from ListFaces on TARGET the faces an earlier attempt stored for the (key, ETag) planned
now, deletes those it stored for another version, indexes the rest, and bills the earlier attempts'
calls whose batch was not written. SIGTERM stops it as Ctrl-C does (exit 143). See docs/faces.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from batch.analyses.registry import REGISTRY, settings_digest
from batch.aws.s3 import s3_client
from batch.aws.session import resolved_region
from batch.config.loader import config_digest
from batch.config.model import RunConfig
from batch.core.calls import Call, CallResult, ImageCalls, paid_calls
from batch.core.errors import (
    CollectionUnavailable,
    ConfigError,
    Interrupted,
    MigrationIncomplete,
    NothingToAnalyse,
    OutputUnreadable,
    RekbatchError,
)
from batch.core.image_record import ImageRecord
from batch.core.incremental import settled_now
from batch.core.manifest import BatchRecord, indexing_record_path, keep_complete_batches
from batch.core.selection import ListedObject
from batch.faces.migration import (
    CommittedImage,
    IndexingRecord,
    MigrationPlan,
    Resumed,
    Resumption,
    common_folder,
    dry_run_lines,
    listfaces_response,
    plan_migration,
    resume_plan,
)
from batch.faces.sync import CollectionSync, collection_error, face_pages, known_faces
from batch.run.batch_task import finish_batch
from batch.run.commit import Attempt, commit, start_attempt, write_snapshot
from batch.run.image_pipeline import analyse_image
from batch.run.plan import operation_prices, run_context
from batch.run.summary import RunSummary
from batch.storage.commits import Heartbeat, RunStore
from batch.storage.readers import read_committed
from batch.storage.sink import Destination

ANALYSIS = "index_faces"
#: The operations a migration calls (its quotas are resolved for these).
OPERATIONS = (
    "DescribeCollection",
    "CreateCollection",
    "ListFaces",
    "IndexFaces",
    "DeleteFaces",
    "DeleteCollection",
)
_IMAGE_COLUMNS = ["bucket", "key", "etag", "size_bytes", "last_modified", "analyses_done"]


@dataclasses.dataclass(frozen=True)
class Migration:
    """The command's inputs, checked."""

    source: str
    target: str
    output: str
    dry_run: bool
    delete_source: bool
    command_line: str = ""


def plan(config: RunConfig, migration: Migration, store: RunStore) -> tuple[MigrationPlan, RunConfig]:
    """The plan from the committed rows under the output, and the config of the migration's run (its
    `index_faces` settings those of the config with TARGET as the collection)."""
    manifests = store.manifests()
    if not manifests:
        raise OutputUnreadable(f"no committed run under {migration.output}")
    analysis, settings = REGISTRY[ANALYSIS], config.analysis_settings[ANALYSIS]
    source_settings = dataclasses.replace(settings, collection=migration.source)
    target_settings = dataclasses.replace(settings, collection=migration.target)
    rows = (
        row
        for table in read_committed(store, manifests, "images", _IMAGE_COLUMNS)
        for row in table.to_pylist()
    )
    indexed = known_faces(store, manifests, (), migration.source).latest
    found = plan_migration(
        rows,
        {image: len(faces) for image, faces in indexed.items()},
        analysis=ANALYSIS,
        source_digest=settings_digest(analysis, source_settings),
        target_digest=settings_digest(analysis, target_settings),
    )
    if found.unsettled:
        raise ConfigError(
            f"collection migrate: {len(found.unsettled)} keys of {migration.source}'s indexed_faces rows "
            f"(first {found.unsettled[0]!r}) were not indexed with this config's [analyses.index_faces] "
            "settings: pass the --config the runs used"
        )
    if not found.images and not found.migrated:
        raise NothingToAnalyse(f"no committed run under {migration.output} indexed into {migration.source}")
    buckets = found.buckets()
    if len(buckets) > 1:
        raise ConfigError(
            f"collection migrate: the images of {migration.source} are in {len(buckets)} buckets"
        )
    bucket = buckets.pop() if buckets else "-"
    prefix = common_folder(image.key for image in found.images)
    run_config = dataclasses.replace(
        config,
        input=f"s3://{bucket}/{prefix}",
        output=migration.output,
        analyses=(ANALYSIS,),
        analysis_settings={**config.analysis_settings, ANALYSIS: target_settings},
        run_id=_run_id(store, migration),
        resume="",
        dry_run=False,
    )
    return found, run_config


def _run_id(store: RunStore, migration: Migration) -> str:
    """`migrate-<digest of the pair>-<n>`: the first n not committed yet, so that a second invocation
    after a crash continues the same run, and one after a commit starts the next."""
    pair = hashlib.sha256(f"{migration.source}\0{migration.target}".encode()).hexdigest()[:12]
    n = 1
    while store.manifest(f"migrate-{pair}-{n}") is not None:
        n += 1
    return f"migrate-{pair}-{n}"


def migrate(config: RunConfig, migration: Migration, caller_for: Any, out: TextIO) -> int:
    """The command: plan, (dry run: print and stop), index, commit, and delete SOURCE when asked and
    every image is in TARGET. `caller_for(operations)` makes the rate-limited caller."""
    s3 = s3_client()
    store = RunStore(Destination.for_output(migration.output, config.output_options), s3)
    try:
        found, run_config = plan(config, migration, store)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise OutputUnreadable(f"cannot read {migration.output}: {code}") from None
    except BotoCoreError as exc:
        raise OutputUnreadable(f"cannot read {migration.output}: {exc}") from None
    if migration.dry_run:
        lines = dry_run_lines(migration.source, migration.target, found, config.prices, price_key=ANALYSIS)
        print("\n".join(lines), file=out)
        return 0
    with _Sigterm().handling() as sigterm:
        caller, counts, quotas = caller_for(OPERATIONS, threads=config.rekognition.max_calls_in_flight)
        source = CollectionSync(caller, migration.source, counts)
        target = CollectionSync(caller, migration.target, counts)
        source_found = source.describe()
        target.ensure()
        target_found = target.describe() or {}
        state = "created" if target.created else "existing"
        model = target_found.get("FaceModelVersion", "-")
        print(
            f"migrate {_described(migration.source, source_found)} -> {migration.target} "
            f"(face model {model}, {state})",
            file=out,
        )
        summary = _summary(run_config, migration, quotas)
        outcomes = Counter[str]()
        if found.images:
            outcomes = _index(run_config, store, summary, found.images, target=target, s3=s3, sigterm=sigterm)
        complete = outcomes["changed"] + outcomes["failed"] == 0
        _report(out, migration, found, outcomes, summary)
        if not complete:
            raise MigrationIncomplete(
                f"collection migrate: {outcomes['changed']} images changed or deleted since they were "
                f"indexed and {outcomes['failed']} failed: not in {migration.target}"
                + ("; --delete-source not done" if migration.delete_source else "")
            )
        if migration.delete_source and source_found is not None:
            faces = int(source_found.get("FaceCount", 0))
            done = caller.call("delete_collection", "DeleteCollection", {"CollectionId": migration.source})
            if not done.ok:
                raise collection_error(migration.source, "DeleteCollection", done)
            print(f"deleted collection {migration.source} and its {faces} faces", file=out)
        return 0


class _Sigterm:
    """SIGTERM (cron, Kubernetes, Airflow) stops the migration as Ctrl-C does: nothing more is sent, the
    calls in flight end, nothing is committed, one line and exit 143; running it again continues. Once
    the commit starts, it is ignored: the command ends in a moment, committed."""

    def __init__(self) -> None:
        self.committing = False

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.committing:
            raise Interrupted(
                "collection migrate: stopped by SIGTERM, nothing committed; run the same command again "
                "to continue",
                signum,
            )

    @contextlib.contextmanager
    def handling(self) -> Iterator[_Sigterm]:
        """Handle SIGTERM in the block (the main thread only: elsewhere Python cannot)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


def _described(collection: str, found: Mapping[str, Any] | None) -> str:
    """SOURCE and its face model; a SOURCE deleted already is no obstacle (the images are in S3)."""
    return (
        f"{collection} (missing)"
        if found is None
        else f"{collection} (face model {found.get('FaceModelVersion', '-')})"
    )


def _threads(config: RunConfig, tps: float) -> int:
    """Images in flight: enough to keep IndexFaces at its quota at twice the expected latency (Little's
    law), at most `rekognition.max_calls_in_flight`."""
    wanted = math.ceil(tps * config.rekognition.expected_latency * 2)
    return max(1, min(config.rekognition.max_calls_in_flight, wanted))


def _summary(config: RunConfig, migration: Migration, quotas: Mapping[str, Any]) -> RunSummary:
    summary = RunSummary(
        run_id=config.run_id,
        input=config.input,
        output=config.output,
        region=resolved_region(config.rekognition.region),
        analyses=config.analyses,
        config_digest=config_digest(config),
        command_line=migration.command_line,
        started_at=datetime.now(UTC),
    )
    summary.quotas = {operation: quota.tps for operation, quota in quotas.items()}
    summary.quota_sources = {operation: quota.source for operation, quota in quotas.items()}
    return summary


def _index(
    config: RunConfig,
    store: RunStore,
    summary: RunSummary,
    images: Sequence[CommittedImage],
    *,
    target: CollectionSync,
    s3: Any,
    sigterm: _Sigterm,
) -> Counter[str]:
    """Claim an attempt and run it (`_attempt`); the images' outcomes."""
    attempt = start_attempt(config, store, summary)
    with Heartbeat(store, summary.run_id, attempt.record.attempt):  # gc leaves a running migration alone
        return _attempt(config, store, summary, attempt, images, target=target, s3=s3, sigterm=sigterm)


def _attempt(
    config: RunConfig,
    store: RunStore,
    summary: RunSummary,
    attempt: Attempt,
    images: Sequence[CommittedImage],
    *,
    target: CollectionSync,
    s3: Any,
    sigterm: _Sigterm,
) -> Counter[str]:
    """Keep the complete batches of killed invocations, take what ListFaces shows of the images they
    indexed after (the ETag they recorded), delete the faces they stored for other ETags, index the rest
    in batches (each image recorded before its calls), and commit; the images' outcomes (and `recovered`,
    `stale`: faces deleted, `billed_before`: their IndexFaces calls)."""
    prices = operation_prices(config)
    split = _resume(store, summary, attempt, images, target=target, prices=prices)
    work = [item for item in split.images if item.recovered]
    work += [item for item in split.images if not item.recovered]
    for item in work:
        attempt.ledger.listed(item.image.key, item.image.etag)
    summary.images = attempt.ledger.counts
    context = run_context(config, attempt.record)
    digests = settled_now(context.settings_digests[ANALYSIS], None)
    stop = threading.Event()
    billed_before: list[int] = []  # appended to by the image threads

    def one(batch: int, item: Resumed) -> ImageRecord:
        image = item.image
        obj = ListedObject(image.key, image.etag, image.size, image.last_modified)
        calls = _Journal(functools.partial(_record_sending, store, context, item))
        call: Call = functools.partial(target.caller.call, journal=calls)
        if item.recovered:  # indexed by a killed invocation: its answer is what ListFaces shows
            recovered = CallResult(response=listfaces_response(item.recovered), attempts=0)
            call = lambda *_: recovered  # noqa: E731
        result = analyse_image(obj, context, call, s3, stop, analyses=(ANALYSIS,))
        row = result.image_row
        done = row["status"] in ("rejected", "skipped") or ANALYSIS in row["analyses"]
        row["analyses_done"] = [{"analysis": ANALYSIS, "settings_digest": d} for d in digests] if done else []
        rows = {"images": [row], "errors": result.errors, **result.rows}
        counted = calls.calls.counts() + Counter(item.earlier)  # the bill: this try's and the earlier ones'
        billed_before.append(paid_calls(item.earlier, "IndexFaces"))
        return ImageRecord(
            image.key,
            image.etag,
            context.attempt,
            batch,
            dict(counted),
            calls.calls.retries,
            dict(item.repeated()),
            rows=rows,
            fatal=result.fatal,
        )

    threads = _threads(config, summary.quotas.get("IndexFaces", config.rekognition.tps))
    with ThreadPoolExecutor(max_workers=threads) as pool:

        def submit(batch: int, item: Resumed) -> Future[ImageRecord]:
            return pool.submit(one, batch, item)

        size = config.dask.batch_size
        batches = [work[first : first + size] for first in range(0, len(work), size)]
        _run_batches(context, attempt, summary, batches, submit=submit,
                     ahead=math.ceil(threads / size), stop=stop, s3=s3, prices=prices)  # fmt: skip
    sigterm.committing = True
    if commit(config, store, summary, attempt):
        write_snapshot(store)
    if summary.status != "completed":
        problem = summary.problem()
        raise problem if problem is not None else RekbatchError(f"collection migrate: {summary.status}")
    outcomes = Counter(attempt.ledger.counts)
    outcomes["recovered"] = len(split.recovered)
    outcomes["stale"] = len(split.stale)
    outcomes["billed_before"] = sum(billed_before)
    return outcomes


def _run_batches(
    context: Any,
    attempt: Attempt,
    summary: RunSummary,
    batches: Sequence[Sequence[Resumed]],
    *,
    submit: Callable[[int, Resumed], Future[ImageRecord]],
    ahead: int,
    stop: threading.Event,
    s3: Any,
    prices: Mapping[str, float],
) -> None:
    """Submit the batches, up to `ahead` more than the one being finished, and finish them in order.
    On a signal or an error that ends the migration: cancel the images not started (those in flight
    end), and raise."""
    pending: deque[tuple[int, list[Future[ImageRecord]]]] = deque()
    try:
        for items in batches:
            index, attempt.next_batch = attempt.next_batch, attempt.next_batch + 1
            pending.append((index, [submit(index, item) for item in items]))
            if len(pending) > ahead:
                _finish_batch(context, attempt, summary, pending.popleft(), stop, s3=s3, prices=prices)
        while pending:
            _finish_batch(context, attempt, summary, pending.popleft(), stop, s3=s3, prices=prices)
    except BaseException:
        stop.set()
        for _, futures in pending:
            for future in futures:
                future.cancel()
        raise


def _resume(
    store: RunStore,
    summary: RunSummary,
    attempt: Attempt,
    images: Sequence[CommittedImage],
    *,
    target: CollectionSync,
    prices: Mapping[str, float],
) -> Resumption:
    """What the run's earlier attempts left: their complete batches kept, the faces they stored after
    (TARGET's faces no committed row nor kept batch lists) matched with their indexing records, and
    the stale ones deleted."""
    listed = store.control_files(summary.run_id)
    kept = _keep_batches(store, summary, attempt, prices, listed)
    known = known_faces(store, store.manifests(), attempt.files, target.collection)
    unknown = (
        face
        for page in face_pages(target.caller, target.collection)
        for face in page
        if face["FaceId"] not in known.ids
    )
    covered = {  # the records of kept images are not read: their batches bill their calls
        indexing_record_path(summary.run_id, batch.attempt, image.key, image.etag)
        for batch in kept
        for image in batch.images
    }
    bodies = store.indexing(summary.run_id, listed, besides=covered)
    records = [IndexingRecord.from_json(body) for body in bodies]
    kept_keys = {image.key for batch in kept for image in batch.images}
    split = resume_plan(images, kept_keys, unknown, records)
    target.delete(split.stale)  # before any batch records their keys again
    return split


def _record_sending(
    store: RunStore, context: Any, item: Resumed, calls: Mapping[tuple[str, str], int]
) -> None:
    """Before each IndexFaces call of an image: its record (`IndexingRecord`), so a rerun after a kill
    knows the faces in TARGET of that (key, ETag) are the migration's, and bills the call."""
    image = item.image
    record = IndexingRecord(context.attempt, image.key, image.etag, item.foreign, dict(calls))
    store.write_indexing(context.run_id, context.attempt, image.key, image.etag, record.to_json())


def _finish_batch(
    context: Any,
    attempt: Attempt,
    summary: RunSummary,
    batch: tuple[int, list[Future[ImageRecord]]],
    stop: threading.Event,
    *,
    s3: Any,
    prices: Mapping[str, float],
) -> None:
    """Write one batch once its images are done (files, then its record: a crash keeps it), and add
    it to the attempt; an image whose error ends the migration (AccessDenied) stops the others."""
    index, futures = batch
    records = [future.result() for future in futures]
    fatal = next((record.fatal for record in records if record.fatal), None)
    if fatal:
        stop.set()
        raise CollectionUnavailable(f"collection migrate: {fatal}; run it again to continue")
    record = finish_batch(context, index, records, s3)
    attempt.add(record)
    summary.add_batch(record, prices)


def _keep_batches(
    store: RunStore,
    summary: RunSummary,
    attempt: Attempt,
    prices: Mapping[str, float],
    listed: Sequence[str],
) -> list[BatchRecord]:
    """The complete batches of the run's killed invocations, kept (as `--resume` keeps them)."""
    complete = store.batches(summary.run_id, listed)
    missing = {entry.path for entry in store.missing(e for batch in complete for e in batch.files)}
    kept = keep_complete_batches(complete, missing)
    for batch in kept:
        for image in batch.images:
            attempt.ledger.listed(image.key, image.etag)
        attempt.add(batch)
        summary.add_batch(batch, prices)
    summary.kept_batches = len(kept)
    summary.kept_images = sum(len(batch.images) for batch in kept)
    return kept


class _Journal:
    """Counts one image's calls (`batch.core.calls.CallJournal`) and records them before each is sent
    (`record`, with the one sent as in flight); no answer is kept: a crash's lost answers are recovered
    from ListFaces."""

    def __init__(self, record: Callable[[Mapping[tuple[str, str], int]], None]) -> None:
        self.calls = ImageCalls()
        self._record = record

    def cached(self, operation: str, digest: str) -> Mapping[str, Any] | None:
        return None

    def sending(self, operation: str, *, retry: bool) -> None:
        self.calls.sending(operation, retry=retry)
        self._record(self.calls.counts())

    def answered(self, operation: str, outcome: str, digest: str = "", response: Any = None) -> None:
        self.calls.answered(operation, outcome)


def _report(
    out: TextIO, migration: Migration, found: MigrationPlan, outcomes: Counter[str], summary: RunSummary
) -> None:
    rows = summary.rows.get("indexed_faces", 0)
    cost = summary.estimated_cost_usd
    print(
        f"  images: {len(found.images)} to index again ({found.migrated} already in {migration.target}): "
        f"{outcomes['analysed']} indexed ({rows} faces), {outcomes['rejected'] + outcomes['skipped']} "
        f"rejected or empty as before, {outcomes['changed']} changed or deleted since indexed, "
        f"{outcomes['failed']} failed; {summary.kept_images} kept from an earlier invocation, "
        f"{outcomes['recovered']} taken from ListFaces, {outcomes['stale']} stale faces deleted (stored by "
        "an earlier invocation for another version)",
        file=out,
    )
    if found.images:
        where = f"committed as run {summary.run_id} in {migration.output}"
        before = outcomes["billed_before"]
        earlier = (
            f" (of them {before} calls by an earlier invocation whose batch was not written, counted as "
            "billed)"
            if before
            else ""
        )
        print(f"  IndexFaces: ${cost:.4f} at list price{earlier}; {where}", file=out)
