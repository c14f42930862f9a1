"""The job's configuration: frozen value objects, one precedence order, validated once.

Precedence, lowest first: the defaults below (documented in `configs/default.toml`), a TOML file
(`--config`), environment variables `REKBATCH_<SECTION>__<KEY>` (e.g. `REKBATCH_REKOGNITION__TPS=20`,
`REKBATCH_ANALYSES__LABELS__MIN_CONFIDENCE=70`; values are read as TOML literals, else as strings),
then command-line flags. Every key is checked at load: an unknown key or a bad value raises
`ConfigError` naming it, e.g. `rekognition.tps: must be > 0, got -1`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch.analyses import REGISTRY
from batch.core.errors import ConfigError
from batch.core.retry import RetryPolicy

ENV_PREFIX = "REKBATCH_"
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
    #: (`batch.core.convert`). false: skip them (WebP...BMP) or reject them (JPEG/PNG over 5 MB) with a reason.
    convert_to_jpeg: bool = True
    #: The largest object the job reads whole to convert; larger ones are rejected (TooLargeToConvert).
    max_convert_bytes: int = 50_000_000
    #: Calls per second per operation that the whole run (every worker together) may make: the
    #: account's quota for operations not named in `[quotas]`.
    tps: float = 50.0
    #: Region of the Rekognition client; empty: boto3's usual lookup (AWS_DEFAULT_REGION, profile).
    region: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Attempts per call (first call included) for throttling and transient errors.
    max_attempts: int = 6
    #: Upper bound on the time one call spends retrying.
    max_retry_seconds: float = 120.0
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
        _check(
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
            _check(getattr(self, name) > 0, f"rekognition.{name}", "must be > 0", getattr(self, name))
        for name in ("max_attempts", "max_convert_bytes"):
            _check(getattr(self, name) >= 1, f"rekognition.{name}", "must be >= 1", getattr(self, name))
        _check(
            0 <= self.retry_budget_ratio <= 1,
            "rekognition.retry_budget_ratio",
            "must be between 0 and 1",
            self.retry_budget_ratio,
        )
        _check(
            self.retry_budget_capacity >= 0,
            "rekognition.retry_budget_capacity",
            "must be >= 0",
            self.retry_budget_capacity,
        )
        _check(self.calls_in_flight >= 0, "rekognition.calls_in_flight", "must be >= 0", self.calls_in_flight)
        _check(
            self.expected_latency > 0, "rekognition.expected_latency", "must be > 0", self.expected_latency
        )
        _check(
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

    def __post_init__(self) -> None:
        _check(self.n_workers >= 0, "dask.n_workers", "must be >= 0", self.n_workers)
        _check(
            self.threads_per_worker >= 1, "dask.threads_per_worker", "must be >= 1", self.threads_per_worker
        )
        _check(1 <= self.batch_size <= 10_000, "dask.batch_size", "must be in 1..10000", self.batch_size)
        _check(self.batches_in_flight >= 0, "dask.batches_in_flight", "must be >= 0", self.batches_in_flight)


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
        _check(self.compression in codecs, "output.compression", f"must be one of {codecs}", self.compression)
        _check(self.sse in SSE_MODES, "output.sse", f"must be one of {SSE_MODES}", self.sse)
        _check(
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
        _check(self.max_bytes >= 100_000, "report.max_bytes", "must be >= 100000", self.max_bytes)
        _check(0 <= self.thumbnails <= 1000, "report.thumbnails", "must be in 0..1000", self.thumbnails)


#: US dollars per successful call at list price (us-east-1, first tier). Check
#: https://aws.amazon.com/rekognition/pricing/ for your region and volume, and set yours in the config.
DEFAULT_PRICES: dict[str, float] = {
    "labels": 0.001,
    "faces": 0.001,
    "text": 0.001,
    "moderation": 0.001,
    "celebrities": 0.001,
    "index_faces": 0.001,
    "face_search": 0.001,
    "compare_faces": 0.001,
}

#: US dollars for what a collection costs beyond its IndexFaces calls, in `[pricing]` next to the
#: analyses: each face stored, per month ("face metadata storage", list price $0.00001), and each
#: storage operation the job makes to keep the collection in sync (CreateCollection, DescribeCollection,
#: ListFaces, DeleteFaces; 0 by default: check the pricing page for your region).
STORAGE_PRICES: dict[str, float] = {
    "face_storage_month": 0.00001,
    "storage_operation": 0.0,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, resolved and validated."""

    input: str = ""
    output: str = ""
    analyses: tuple[str, ...] = DEFAULT_ANALYSES
    run_id: str = ""
    limit: int = 0
    dry_run: bool = False
    summary_json: str = ""
    #: Analyse every listed image, ignoring what committed runs already settled.
    full: bool = False
    #: The run id of a crashed run to finish (keeps its complete batches).
    resume: str = ""
    #: Exit non-zero (6) after committing when (rejected + failed) / images sent exceeds this.
    max_error_rate: float = 1.0
    #: With index_faces: delete from the collection the faces of keys under the prefix no longer listed.
    prune: bool = False
    input_filter: InputConfig = field(default_factory=InputConfig)
    rekognition: RekognitionConfig = field(default_factory=RekognitionConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    output_options: OutputConfig = field(default_factory=OutputConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    #: Settings object per analysis name (each analysis module's own frozen Settings type).
    analysis_settings: Mapping[str, Any] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=lambda: {**DEFAULT_PRICES, **STORAGE_PRICES})
    #: Calls per second per analysis's operation, where it differs from `rekognition.tps`.
    quotas: Mapping[str, float] = field(default_factory=dict)

    def quota(self, analysis: str) -> float:
        """The rate the whole cluster may call this analysis's operation at."""
        return self.quotas.get(analysis, self.rekognition.tps)

    @property
    def bucket(self) -> str:
        return parse_s3_url(self.input, "input")[0]

    @property
    def prefix(self) -> str:
        return parse_s3_url(self.input, "input")[1]

    def digest(self) -> str:
        """A stable digest of what determines the results (not run id, limits or output paths)."""
        payload = {
            "analyses": list(self.analyses),
            "settings": {
                name: REGISTRY[name].settings_document(self.analysis_settings[name]) for name in self.analyses
            },
            "image_source": self.rekognition.image_source,
            "convert_to_jpeg": self.rekognition.convert_to_jpeg,
            "max_convert_bytes": self.rekognition.max_convert_bytes,
            "input_filter": _plain(self.input_filter),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Sections of the TOML file, by name, and the dataclass each is read into.
_SECTIONS: dict[str, type] = {
    "input": InputConfig,
    "rekognition": RekognitionConfig,
    "dask": DaskConfig,
    "output": OutputConfig,
    "report": ReportConfig,
}
_RUN_KEYS = {
    "input",
    "output",
    "analyses",
    "run_id",
    "limit",
    "dry_run",
    "summary_json",
    "full",
    "resume",
    "max_error_rate",
    "prune",
}


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build the run's config from defaults, a TOML file, the environment and flag overrides.

    `overrides` uses dotted keys as they appear in the file (`run.input`, `rekognition.tps`,
    `dask.scheduler`, ...); a value of None means "flag not given" and is ignored.
    """
    return _build(_config_tree(path, environ, overrides))


def load_account_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The config of a command that acts on the account rather than a run (`rekbatch collection`):
    every section is read and checked as for a run (`[rekognition]`, `[quotas]`, `[pricing]`...), but
    no input or output is required."""
    return _build(_config_tree(path, environ, overrides), validate_run=False)


def load_report_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> ReportConfig:
    """The `[report]` section alone (file, then environment), for `rekbatch report`, which needs no
    input or output settings; other sections are not checked."""
    return _section(ReportConfig, _config_tree(path, environ, None).get("report", {}), "report")


def _config_tree(
    path: str | Path | None, environ: Mapping[str, str] | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    if path is not None:
        _merge(tree, _read_toml(Path(path)))
    _merge(tree, _env_tree(os.environ if environ is None else environ))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    return tree


def parse_s3_url(url: str, what: str) -> tuple[str, str]:
    """Split `s3://bucket/prefix` into (bucket, prefix); raise ConfigError naming `what` if malformed."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", url)
    if not match:
        raise ConfigError(f"{what}: expected s3://BUCKET/PREFIX, got {url!r}")
    return match.group(1), match.group(2) or ""


# --- building ----------------------------------------------------------------------------------------


def _build(tree: Mapping[str, Any], *, validate_run: bool = True) -> RunConfig:
    unknown = set(tree) - set(_SECTIONS) - {"run", "analyses", "pricing", "quotas"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section")
    sections = {name: _section(cls, tree.get(name, {}), name) for name, cls in _SECTIONS.items()}
    run = dict(tree.get("run", {}))
    bad = set(run) - _RUN_KEYS
    if bad:
        raise ConfigError(f"run.{sorted(bad)[0]}: unknown key")
    analyses = _analyses(run.get("analyses", DEFAULT_ANALYSES))
    settings_tree = tree.get("analyses", {})
    if not isinstance(settings_tree, Mapping):
        raise ConfigError("analyses: must be a table of [analyses.<name>] sections")
    for name in settings_tree:
        if name not in REGISTRY:
            raise ConfigError(f"analyses.{name}: unknown analysis (known: {', '.join(REGISTRY)})")
    settings = {
        name: REGISTRY[name].settings_type.from_mapping(settings_tree.get(name, {}), f"analyses.{name}")
        for name in REGISTRY
    }
    config = RunConfig(
        input=_typed(run.get("input", ""), str, "run.input"),
        output=_typed(run.get("output", ""), str, "run.output"),
        analyses=analyses,
        run_id=_typed(run.get("run_id", ""), str, "run.run_id"),
        limit=_typed(run.get("limit", 0), int, "run.limit"),
        dry_run=_typed(run.get("dry_run", False), bool, "run.dry_run"),
        summary_json=_typed(run.get("summary_json", ""), str, "run.summary_json"),
        full=_typed(run.get("full", False), bool, "run.full"),
        resume=_typed(run.get("resume", ""), str, "run.resume"),
        max_error_rate=_typed(run.get("max_error_rate", 1.0), float, "run.max_error_rate"),
        prune=_typed(run.get("prune", False), bool, "run.prune"),
        input_filter=sections["input"],
        rekognition=sections["rekognition"],
        dask=sections["dask"],
        output_options=sections["output"],
        report=sections["report"],
        analysis_settings=settings,
        prices=_per_analysis(
            tree.get("pricing", {}), "pricing", {**DEFAULT_PRICES, **STORAGE_PRICES}, minimum=0.0
        ),
        quotas=_per_analysis(tree.get("quotas", {}), "quotas", {}, minimum=None),
    )
    if validate_run:
        _validate_run(config)
    return config


def _validate_run(config: RunConfig) -> None:
    if not config.input:
        raise ConfigError("run.input: required (--input s3://BUCKET/PREFIX)")
    parse_s3_url(config.input, "run.input")
    if not config.output and not config.dry_run:
        raise ConfigError("run.output: required (--output DIR or s3://BUCKET/PREFIX)")
    if config.output.startswith("s3://"):
        parse_s3_url(config.output, "run.output")
    _check(config.limit >= 0, "run.limit", "must be >= 0", config.limit)
    for name in ("run_id", "resume"):
        value = getattr(config, name)
        if value and not RUN_ID_PATTERN.match(value):
            # Colons break Athena's partition repair and slashes would nest paths.
            raise ConfigError(
                f"run.{name}: only letters, digits, '.', '_' and '-' are allowed, got {value!r}"
            )
    if config.resume and config.run_id and config.resume != config.run_id:
        raise ConfigError(f"run.resume: resumes run {config.resume!r} but run.run_id is {config.run_id!r}")
    _check(0 <= config.max_error_rate <= 1, "run.max_error_rate", "must be in 0..1", config.max_error_rate)
    if "index_faces" in config.analyses and not config.analysis_settings["index_faces"].collection:
        raise ConfigError("analyses.index_faces.collection: required by index_faces (--collection NAME)")
    if "face_search" in config.analyses and not config.analysis_settings["face_search"].collection:
        raise ConfigError("analyses.face_search.collection: required by face_search (--collection NAME)")
    if "compare_faces" in config.analyses and not config.analysis_settings["compare_faces"].references:
        raise ConfigError(
            "analyses.compare_faces.references: required by compare_faces (--reference s3://BUCKET/KEY)"
        )
    if config.prune and "index_faces" not in config.analyses:
        raise ConfigError("run.prune: deletes faces of a collection; add index_faces to run.analyses")


def _analyses(value: Any) -> tuple[str, ...]:
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("run.analyses: give at least one analysis name")
    for name in names:
        if name not in REGISTRY:
            raise ConfigError(f"run.analyses: unknown analysis {name!r} (known: {', '.join(REGISTRY)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"run.analyses: listed twice: {names}")
    return tuple(names)


def _per_analysis(
    section: Any, where: str, defaults: Mapping[str, float], *, minimum: float | None
) -> dict[str, float]:
    """A table of numbers keyed by analysis name: `[pricing]` (>= 0) and `[quotas]` (> 0)."""
    values = dict(defaults)
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: must be a table")
    for name, value in section.items():
        if name not in REGISTRY and name not in defaults:
            raise ConfigError(f"{where}.{name}: unknown analysis (known: {', '.join(REGISTRY)})")
        values[name] = _typed(value, float, f"{where}.{name}")
        if minimum is None:
            _check(values[name] > 0, f"{where}.{name}", "must be > 0", value)
        else:
            _check(values[name] >= minimum, f"{where}.{name}", f"must be >= {minimum:g}", value)
    return values


def _section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(fields))})")
        kwargs[key] = _typed(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def _typed(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a simple type hint (str, int, float, bool, tuple[str, ...])."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of strings, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: must be {hint.__name__}, got {value!r}")
    if isinstance(hint, types.UnionType):
        raise ConfigError(f"{where}: unsupported type")  # pragma: no cover - no such fields today
    return value


def _check(ok: bool, where: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{where}: {rule}, got {value!r}")


# --- sources -------------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _env_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        _set_dotted(tree, dotted, _env_value(raw))
    return tree


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[leaf] = value


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
