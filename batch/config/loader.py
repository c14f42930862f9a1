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
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batch.analyses.registry import REGISTRY, default_prices
from batch.config.model import (
    DEFAULT_ANALYSES,
    RUN_ID_PATTERN,
    DaskConfig,
    InputConfig,
    OutputConfig,
    RekognitionConfig,
    ReportConfig,
    RunConfig,
    check,
    parse_s3_url,
)
from batch.core.errors import ConfigError

ENV_PREFIX = "REKBATCH_"


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
    "progress_log_seconds",
}


def config_digest(config: RunConfig) -> str:
    """A stable digest of what determines the results (not run id, limits or output paths)."""
    payload = {
        "analyses": list(config.analyses),
        "settings": {
            name: REGISTRY[name].settings_document(config.analysis_settings[name]) for name in config.analyses
        },
        "image_source": config.rekognition.image_source,
        "convert_to_jpeg": config.rekognition.convert_to_jpeg,
        "max_convert_bytes": config.rekognition.max_convert_bytes,
        "input_filter": _plain(config.input_filter),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
        progress_log_seconds=_typed(run.get("progress_log_seconds", 30.0), float, "run.progress_log_seconds"),
        input_filter=sections["input"],
        rekognition=sections["rekognition"],
        dask=sections["dask"],
        output_options=sections["output"],
        report=sections["report"],
        analysis_settings=settings,
        prices=_per_analysis(tree.get("pricing", {}), "pricing", default_prices(), minimum=0.0),
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
    check(config.limit >= 0, "run.limit", "must be >= 0", config.limit)
    for name in ("run_id", "resume"):
        value = getattr(config, name)
        if value and not RUN_ID_PATTERN.match(value):
            # Colons break Athena's partition repair and slashes would nest paths.
            raise ConfigError(
                f"run.{name}: only letters, digits, '.', '_' and '-' are allowed, got {value!r}"
            )
    if config.resume and config.run_id and config.resume != config.run_id:
        raise ConfigError(f"run.resume: resumes run {config.resume!r} but run.run_id is {config.run_id!r}")
    every = config.progress_log_seconds
    check(every >= 0, "run.progress_log_seconds", "must be >= 0", every)
    check(0 <= config.max_error_rate <= 1, "run.max_error_rate", "must be in 0..1", config.max_error_rate)
    for name in config.analyses:
        REGISTRY[name].check(config.analysis_settings[name])
    pruning = [analysis.name for analysis in REGISTRY.values() if analysis.prunes]
    if config.prune and not set(pruning) & set(config.analyses):
        raise ConfigError(
            f"run.prune: prunes what {' or '.join(pruning)} keeps outside the output; "
            "add it to run.analyses"
        )


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
            check(values[name] > 0, f"{where}.{name}", "must be > 0", value)
        else:
            check(values[name] >= minimum, f"{where}.{name}", f"must be >= {minimum:g}", value)
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
