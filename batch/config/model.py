"""The job's configuration as frozen value objects: one per TOML section, and `RunConfig` for a run.

Each section checks its own values when built (`ConfigError` naming the key); `batch.config.loader`
builds them from defaults, a TOML file, the environment and flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batch.core.errors import ConfigError
from batch.core.regions import parse_regions
from batch.core.retry import RetryPolicy
from batch.core.segments import CommitEvery

DEFAULT_ANALYSES = ("labels", "faces", "text", "moderation", "celebrities")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class InputConfig:
    """Which listed keys are images to analyse, beyond the fixed rule on names (`IMAGE_SUFFIXES`)."""

    #: Globs (fnmatch) on the key relative to the input prefix; a key must match one of them.
    include: tuple[str, ...] = ("*",)
    #: Globs on the relative key; a key matching any of them is left out.
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class RekognitionConfig:
    #: "s3": send an S3Object reference (no image bytes through the job); "bytes": read the object and
    #: send its bytes (for buckets Rekognition cannot read, e.g. another region).
    image_source: str = "s3"
    #: Images Rekognition refuses as stored but Pillow reads (WebP, GIF, TIFF, BMP; with "bytes", also a
    #: JPEG or PNG over the 5 MB a request carries): send an upright JPEG copy of at most 5 MB instead
    #: (`batch.core.convert`). false: skip them (WebP...BMP) or reject them (JPEG/PNG over 5 MB) with a
    #: reason.
    convert_to_jpeg: bool = True
    #: The largest object the job reads whole to convert; larger ones are rejected (TooLargeToConvert).
    max_convert_bytes: int = 50_000_000
    #: Calls per second per operation that the whole run (every worker together) may make: the
    #: account's quota for operations not named in `[quotas]`.
    tps: float = 50.0
    #: Region of the Rekognition client; empty: boto3's usual lookup (AWS_DEFAULT_REGION, profile).
    region: str = ""
    #: Regions the stateless analyses fan out over, the run's region among them (collections stay in
    #: that one); empty: the run's region alone (`batch.core.regions`).
    regions: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Attempts per call (first call included) for throttling and transient errors.
    max_attempts: int = 6
    #: Upper bound on the time one call spends retrying.
    max_retry_seconds: float = 120.0
    #: A worker process whose calls have been out this long with no answer at all (an endpoint that
    #: accepts connections and never answers) gives up, and the run aborts (exit 4).
    silent_abort_seconds: float = 40.0
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    #: Retries of 5xx, timeouts and dropped connections as a share of calls, per worker process; when
    #: they run out (the endpoint keeps failing) the run ends with a reason instead of retrying on.
    retry_budget_ratio: float = 0.1
    retry_budget_capacity: float = 20.0
    #: Calls (images) in flight per Dask task; 0: sized by Little's law from the quota and the observed
    #: latency, starting from `expected_latency` and bounded by `max_calls_in_flight`.
    calls_in_flight: int = 0
    expected_latency: float = 0.3
    max_calls_in_flight: int = 64

    def __post_init__(self) -> None:
        try:  # "a,b" from a flag or a variable is a list of two
            object.__setattr__(self, "regions", parse_regions(",".join(self.regions)))
        except ValueError as exc:
            raise ConfigError(f"rekognition.regions: {exc}, got {list(self.regions)!r}") from None
        check(
            not (self.region and self.regions) or self.region in self.regions,
            "rekognition.regions",
            f"must include rekognition.region ({self.region}), where collections are",
            list(self.regions),
        )
        check(
            self.image_source in ("s3", "bytes"),
            "rekognition.image_source",
            "must be 's3' or 'bytes'",
            self.image_source,
        )
        for name in (
            "tps",
            "connect_timeout",
            "read_timeout",
            "backoff_base",
            "backoff_max",
            "max_retry_seconds",
        ):
            check(getattr(self, name) > 0, f"rekognition.{name}", "must be > 0", getattr(self, name))
        check(
            self.silent_abort_seconds > self.read_timeout,
            "rekognition.silent_abort_seconds",
            f"must be > rekognition.read_timeout ({self.read_timeout:g})",
            self.silent_abort_seconds,
        )
        for name in ("max_attempts", "max_convert_bytes"):
            check(getattr(self, name) >= 1, f"rekognition.{name}", "must be >= 1", getattr(self, name))
        check(
            0 <= self.retry_budget_ratio <= 1,
            "rekognition.retry_budget_ratio",
            "must be between 0 and 1",
            self.retry_budget_ratio,
        )
        check(
            self.retry_budget_capacity >= 0,
            "rekognition.retry_budget_capacity",
            "must be >= 0",
            self.retry_budget_capacity,
        )
        check(self.calls_in_flight >= 0, "rekognition.calls_in_flight", "must be >= 0", self.calls_in_flight)
        check(self.expected_latency > 0, "rekognition.expected_latency", "must be > 0", self.expected_latency)
        check(
            self.max_calls_in_flight >= max(1, self.calls_in_flight),
            "rekognition.max_calls_in_flight",
            "must be >= 1 and >= calls_in_flight",
            self.max_calls_in_flight,
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.max_retry_seconds, self.backoff_base, self.backoff_max)


@dataclass(frozen=True)
class DaskConfig:
    #: Address of an existing Dask scheduler (tcp://host:8786); empty: DASK_SCHEDULER_ADDRESS, else a
    #: LocalCluster with worker processes.
    scheduler: str = ""
    #: Worker processes of the LocalCluster; 0: one per core.
    n_workers: int = 0
    threads_per_worker: int = 2
    #: Images per Dask task, at least: large enough that the scheduler's ~1 ms per task is small against
    #: the calls. The driver grows it to twice the planned calls in flight per task.
    batch_size: int = 20
    #: Batches submitted and not yet finished; 0: two per worker thread of the cluster.
    batches_in_flight: int = 0
    #: On SIGINT or SIGTERM: seconds the batches in flight may take to finish (their images are then
    #: kept by `--resume`, not paid again) before the rest are cancelled.
    shutdown_grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        check(self.n_workers >= 0, "dask.n_workers", "must be >= 0", self.n_workers)
        check(
            self.threads_per_worker >= 1, "dask.threads_per_worker", "must be >= 1", self.threads_per_worker
        )
        check(1 <= self.batch_size <= 10_000, "dask.batch_size", "must be in 1..10000", self.batch_size)
        check(self.batches_in_flight >= 0, "dask.batches_in_flight", "must be >= 0", self.batches_in_flight)
        check(
            self.shutdown_grace_seconds >= 0,
            "dask.shutdown_grace_seconds",
            "must be >= 0",
            self.shutdown_grace_seconds,
        )


#: `output.sse` values: the bucket's default encryption, SSE-S3, SSE-KMS.
SSE_MODES = ("", "AES256", "aws:kms")


@dataclass(frozen=True)
class OutputConfig:
    #: Parquet compression codec.
    compression: str = "zstd"
    #: Server-side encryption of every object the job writes to an S3 output: "" (the bucket's default
    #: encryption; SSE-S3 unless the bucket says otherwise), "AES256" (SSE-S3) or "aws:kms" (SSE-KMS).
    sse: str = ""
    #: With "aws:kms": the key's full ARN (an alias resolves in the caller's account); empty: the
    #: account's AWS-managed key `aws/s3`.
    kms_key_id: str = ""

    def __post_init__(self) -> None:
        codecs = ("zstd", "snappy", "gzip", "lz4", "none")
        check(self.compression in codecs, "output.compression", f"must be one of {codecs}", self.compression)
        check(self.sse in SSE_MODES, "output.sse", f"must be one of {SSE_MODES}", self.sse)
        check(
            not self.kms_key_id or self.sse == "aws:kms",
            "output.kms_key_id",
            'only with output.sse = "aws:kms"',
            self.kms_key_id,
        )


@dataclass(frozen=True)
class ReportConfig:
    """The HTML run report (`batch.report.page`), written to `<output>/_reports/<run_id>.html`."""

    #: Write the report at the end of every run (`rekbatch report RUN_ID` writes one later too).
    enabled: bool = True
    #: The report's size limit: the gallery is cut to fit (charts and tables come first).
    max_bytes: int = 20_000_000
    #: Gallery pictures of analysed images, sampled across formats and Exif orientations; as many
    #: again for images with an error (every such image gets a tile, pictured or not).
    thumbnails: int = 24

    def __post_init__(self) -> None:
        check(self.max_bytes >= 100_000, "report.max_bytes", "must be >= 100000", self.max_bytes)
        check(0 <= self.thumbnails <= 1000, "report.thumbnails", "must be in 0..1000", self.thumbnails)


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, resolved and validated."""

    input: str = ""
    output: str = ""
    #: s3://BUCKET/KEY of an S3 Inventory report's manifest.json for the input bucket: the run reads
    #: the images from it instead of listing the prefix (which still selects: `batch.aws.inventory`).
    inventory: str = ""
    analyses: tuple[str, ...] = DEFAULT_ANALYSES
    run_id: str = ""
    limit: int = 0
    dry_run: bool = False
    #: With `dry_run`: read each image's header, as the run does, for an exact count (`--probe`).
    probe: bool = False
    summary_json: str = ""
    #: Analyse every listed image, ignoring what committed runs already settled.
    full: bool = False
    #: The run id of a crashed run to finish (keeps its complete batches).
    resume: str = ""
    #: Commit a segment of a long run every this long or this many images (`batch.core.segments`).
    commit_every: CommitEvery = field(default_factory=CommitEvery)
    #: Exit non-zero (6) after committing when (rejected + failed) / images sent exceeds this.
    max_error_rate: float = 1.0
    #: Delete from the state an analysis keeps outside the output (a face collection) what belongs to
    #: keys under the prefix no longer listed.
    prune: bool = False
    #: With `-v` and stderr not a terminal: seconds between two progress lines logged at INFO (0: none).
    progress_log_seconds: float = 30.0
    input_filter: InputConfig = field(default_factory=InputConfig)
    rekognition: RekognitionConfig = field(default_factory=RekognitionConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    output_options: OutputConfig = field(default_factory=OutputConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    #: Settings object per analysis name (each analysis module's own frozen Settings type).
    analysis_settings: Mapping[str, Any] = field(default_factory=dict)
    #: US dollars per successful call of each analysis, and the other `[pricing]` keys (the loader fills
    #: it from the analyses' list prices, `batch.analyses.registry.default_prices`).
    prices: Mapping[str, float] = field(default_factory=dict)
    #: Calls per second per analysis's operation, where it differs from `rekognition.tps`.
    quotas: Mapping[str, float] = field(default_factory=dict)
    #: Who set `rekognition.tps`: "flag" (--tps), "config" (the file or a REKBATCH_ variable), or ""
    #: (no one: the run reads the account's quotas from Service Quotas, `batch.core.service_quotas`).
    tps_source: str = ""

    def quota(self, analysis: str) -> float:
        """The rate the whole cluster may call this analysis's operation at."""
        return self.quotas.get(analysis, self.rekognition.tps)

    def quota_source(self, analysis: str) -> str:
        """Who set this analysis's quota: "config" ([quotas]), "flag" or "config" (rekognition.tps), or
        "" when no one did."""
        return "config" if analysis in self.quotas else self.tps_source

    @property
    def bucket(self) -> str:
        return parse_s3_url(self.input, "input")[0]

    @property
    def prefix(self) -> str:
        return parse_s3_url(self.input, "input")[1]


def parse_s3_url(url: str, what: str) -> tuple[str, str]:
    """Split `s3://bucket/prefix` into (bucket, prefix); raise ConfigError naming `what`, the expected
    form and what is wrong (S3's bucket naming rules, `bucket_name_problem`) if malformed."""
    if not url.startswith("s3://"):
        raise ConfigError(f"{what}: expected s3://BUCKET/PREFIX, got {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    problem = bucket_name_problem(bucket)
    if problem:
        raise ConfigError(
            f"{what}: {url!r}: bucket name {bucket!r} {problem}; S3 bucket names are 3-63 lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit"
        )
    return bucket, prefix


#: Prefixes and suffixes S3 reserves (General purpose bucket naming rules).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """What breaks S3's naming rules for general purpose buckets in `name`, in words; None if nothing
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)."""
    bad = sorted({c for c in name if not ((c.islower() and c.isascii()) or c.isdigit() or c in ".-")})
    upper = " (uppercase is not allowed)" if any(c.isupper() for c in bad) else ""
    reserved = [p for p in _RESERVED_PREFIXES if name.startswith(p)]
    reserved += [s for s in _RESERVED_SUFFIXES if name.endswith(s)]
    rules = (  # first match wins
        (not name, "is empty"),
        (bool(bad), f"has characters S3 does not allow: {''.join(bad)!r}{upper}"),
        (not 3 <= len(name) <= 63, f"is {len(name)} characters long, not 3 to 63"),
        (not (name[:1].isalnum() and name[-1:].isalnum()), "must start and end with a letter or digit"),
        (".." in name, "has two periods in a row"),
        (bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name)), "is formatted as an IP address"),
        (bool(reserved), f"uses {next(iter(reserved), '')!r}, which S3 reserves"),
    )
    return next((problem for broken, problem in rules if broken), None)


def check(ok: bool, where: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{where}: {rule}, got {value!r}")
