"""The job's configuration: frozen value objects, one precedence order, validated once.

Precedence, lowest first: the defaults below (documented in `configs/default.toml`), a TOML file
(`--config`), environment variables `REKBATCH_<SECTION>__<KEY>` (e.g. `REKBATCH_REKOGNITION__TPS=20`,
`REKBATCH_ANALYSES__LABELS__MIN_CONFIDENCE=70`; values are read as TOML literals, else as strings),
then command-line flags. Every key is checked at load: an unknown key or a bad value raises
`ConfigError` naming it, the rule and the value, and where the value came from (the file, the variable
or the flag), e.g. `rekognition.tps: must be > 0, got -1.0 (from flag --tps)`; an unknown key also gets
the closest known one, in the form it was given (`REKBATCH_REKOGNITION__TPS` for a misspelt variable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
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
from batch.core.segments import CommitEvery, parse_commit_every

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
    "inventory",
    "output",
    "analyses",
    "run_id",
    "limit",
    "dry_run",
    "probe",
    "summary_json",
    "full",
    "resume",
    "commit_every",
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
    flags: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build the run's config from defaults, a TOML file, the environment and flag overrides.

    `overrides` uses dotted keys as they appear in the file (`run.input`, `rekognition.tps`,
    `dask.scheduler`, ...); a value of None means "flag not given" and is ignored. `flags` names the
    flag of each override, for the messages (default: "override run.input").
    """
    tree, origins = _config_tree(path, environ, overrides, flags)
    with _naming_origins(origins):
        return dataclasses.replace(_build(tree), tps_source=_tps_source(origins))


def load_account_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> RunConfig:
    """The config of a command that acts on the account rather than a run (`rekbatch collection`):
    every section is read and checked as for a run (`[rekognition]`, `[quotas]`, `[pricing]`...), but
    no input or output is required."""
    tree, origins = _config_tree(path, environ, overrides, flags)
    with _naming_origins(origins):
        return dataclasses.replace(_build(tree, validate_run=False), tps_source=_tps_source(origins))


def _tps_source(origins: Mapping[str, str]) -> str:
    """Who set `rekognition.tps`: "flag" (a flag or an override), "config" (the file or a variable), ""."""
    origin = origins.get("rekognition.tps", "")
    if origin.startswith(("flag ", "override ")):
        return "flag"
    return "config" if origin else ""


def load_report_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> ReportConfig:
    """The `[report]` section alone (file, then environment), for `rekbatch report`, which needs no
    input or output settings; other sections are not checked."""
    tree, origins = _config_tree(path, environ, None, None)
    with _naming_origins(origins):
        return _section(ReportConfig, tree.get("report", {}), "report")


def _config_tree(
    path: str | Path | None,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any] | None,
    flags: Mapping[str, str] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged tree, and where each of its values came from (dotted key -> "flag --tps"...)."""
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        from_file = _read_toml(Path(path))
        _merge(tree, from_file)
        origins.update(dict.fromkeys(_leaves(from_file), f"config file {path}"))
    for name, raw in (os.environ if environ is None else environ).items():
        if name.startswith(ENV_PREFIX):
            dotted = _dotted(name)
            _set_dotted(tree, dotted, _env_value(raw), f"environment variable {name}")
            origins[dotted] = f"environment variable {name}"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            origin = f"flag {flags[dotted]}" if flags and dotted in flags else f"override {dotted}"
            _set_dotted(tree, dotted, value, origin)
            origins[dotted] = origin
    return tree, origins


# --- naming where a bad value came from ---------------------------------------------------------------


@contextlib.contextmanager
def _naming_origins(origins: Mapping[str, str]) -> Iterator[None]:
    """A ConfigError raised inside, about a key that a file, a variable or a flag set, also names that
    origin, and for an unknown key the closest known one, as that origin spells it."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(_with_origin(str(exc), origins)) from None


def _with_origin(message: str, origins: Mapping[str, str]) -> str:
    key, colon, rule = message.partition(": ")
    if not colon or " " in key:
        return message
    given = key if key in origins else next((k for k in origins if k.startswith(f"{key}.")), None)
    if given is None:
        parents = [k for k in origins if key.startswith(f"{k}.")]
        return f"{message} (from {origins[max(parents, key=len)]})" if parents else message
    origin = origins[given]
    if not rule.startswith("unknown"):
        return f"{message} (from {origin})"
    close = difflib.get_close_matches(given, _known_keys(), n=1, cutoff=0.6)
    if origin.startswith("environment variable"):
        hint = f"; did you mean {_variable(close[0])}?" if close else ""
        return f"{origin}: {message}{hint}"
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{message} (from {origin}){hint}"


def _known_keys() -> list[str]:
    """Every dotted key a config may set."""
    keys = [f"run.{key}" for key in sorted(_RUN_KEYS)]
    keys += [f"{name}.{f.name}" for name, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]
    for name, analysis in REGISTRY.items():
        keys += [f"analyses.{name}.{f.name}" for f in dataclasses.fields(analysis.settings_type)]
        keys.append(f"quotas.{name}")
    keys += [f"pricing.{name}" for name in default_prices()]
    return keys


def _dotted(variable: str) -> str:
    """`REKBATCH_REKOGNITION__TPS` -> `rekognition.tps`."""
    return variable[len(ENV_PREFIX) :].lower().replace("__", ".")


def _variable(dotted: str) -> str:
    """`rekognition.tps` -> `REKBATCH_REKOGNITION__TPS`."""
    return ENV_PREFIX + dotted.upper().replace(".", "__")


def _leaves(tree: Mapping[str, Any], parent: str = "") -> Iterator[str]:
    for key, value in tree.items():
        dotted = f"{parent}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{dotted}.")
        else:
            yield dotted


# --- building ----------------------------------------------------------------------------------------


def _build(tree: Mapping[str, Any], *, validate_run: bool = True) -> RunConfig:
    unknown = set(tree) - set(_SECTIONS) - {"run", "analyses", "pricing", "quotas"}
    if unknown:
        known = ", ".join(sorted({*_SECTIONS, "run", "analyses", "pricing", "quotas"}))
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section (known: {known})")
    sections = {name: _section(cls, tree.get(name, {}), name) for name, cls in _SECTIONS.items()}
    run = dict(tree.get("run", {}))
    bad = set(run) - _RUN_KEYS
    if bad:
        raise ConfigError(f"run.{sorted(bad)[0]}: unknown key (known: {', '.join(sorted(_RUN_KEYS))})")
    analyses = _analyses(run.get("analyses", DEFAULT_ANALYSES))
    settings_tree = tree.get("analyses", {})
    if not isinstance(settings_tree, Mapping):
        raise ConfigError(f"analyses: must be a table of [analyses.<name>] sections, got {settings_tree!r}")
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
        inventory=_typed(run.get("inventory", ""), str, "run.inventory"),
        analyses=analyses,
        run_id=_typed(run.get("run_id", ""), str, "run.run_id"),
        limit=_typed(run.get("limit", 0), int, "run.limit"),
        dry_run=_typed(run.get("dry_run", False), bool, "run.dry_run"),
        probe=_typed(run.get("probe", False), bool, "run.probe"),
        summary_json=_typed(run.get("summary_json", ""), str, "run.summary_json"),
        full=_typed(run.get("full", False), bool, "run.full"),
        resume=_typed(run.get("resume", ""), str, "run.resume"),
        commit_every=_commit_every(run.get("commit_every", "")),
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
    if config.inventory:
        _, key = parse_s3_url(config.inventory, "run.inventory")
        check(
            key.endswith("manifest.json"),
            "run.inventory",
            "must be an inventory's s3://.../manifest.json",
            key,
        )
    check(not config.probe or config.dry_run, "run.probe", "only with run.dry_run (--dry-run --probe)", True)
    if not config.output and not config.dry_run:
        raise ConfigError("run.output: required (--output DIR or s3://BUCKET/PREFIX)")
    if config.output.lower().startswith("s3:"):  # "s3:/x" or "S3://x" is a typo, not a local folder
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
            f"run.prune: prunes what {' or '.join(pruning)} keeps outside the output; add it to run.analyses"
        )
    if config.prune and config.inventory:  # a key it misses may be new since, not deleted
        raise ConfigError(
            "run.prune: an inventory is up to 48 h older than the bucket, so a key it misses is not a "
            "deleted object; prune from a run that lists the prefix (without run.inventory)"
        )


def _commit_every(value: Any) -> CommitEvery:
    """`run.commit_every`: a duration or a count of images (`batch.core.segments.parse_commit_every`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # 0 (never), as TOML or a REKBATCH_ variable gives it
    try:
        return parse_commit_every(_typed(value, str, "run.commit_every"))
    except ValueError as exc:
        raise ConfigError(f"run.commit_every: {exc}") from None


def _analyses(value: Any) -> tuple[str, ...]:
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"run.analyses: give at least one analysis name, got {value!r}")
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
        raise ConfigError(f"{where}: must be a table of numbers by analysis name, got {section!r}")
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
        raise ConfigError(f"{where}: must be a table ([{where}]), got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(fields))})")
        kwargs[key] = _typed(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


#: The expected form of a value of each simple type, as a message says it.
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


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
        raise ConfigError(f"{where}: must be {_TYPE_NAMES[hint]}, got {value!r}")
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


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section, it holds {node!r} ({origin})")
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
