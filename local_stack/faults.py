"""Per-operation quota, latency and fault injection for the local endpoint.

Configuration is a frozen `Behaviour` per operation. Precedence, lowest first:
    built-in defaults (no quota, no latency, no faults)
    < the TOML file's top-level keys (or its `[defaults]` table)
    < command-line flags (they apply to every operation)
    < the TOML file's `[operations.<Name>]` tables (the most specific wins)

Each call: the operation's token bucket first (over quota -> ProvisionedThroughputExceededException at once,
no latency), then one fault draw from a seeded RNG, then latency = base + uniform(0, jitter).
"""

from __future__ import annotations

import math
import random
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from batch.core.quota import TokenBucket


@dataclass(frozen=True)
class Behaviour:
    """How one operation behaves. `tps=None` means no quota; `burst=None` means burst = max(1, tps)."""

    tps: float | None = None
    burst: float | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_rate_500: float = 0.0
    fault_rate_throttle: float = 0.0
    fault_rate_drop: float = 0.0
    fault_rate_slow: float = 0.0
    slow_seconds: float = 30.0

    def __post_init__(self) -> None:
        rates = (self.fault_rate_500, self.fault_rate_throttle, self.fault_rate_drop, self.fault_rate_slow)
        if any(not 0 <= p <= 1 for p in rates) or sum(rates) > 1 + 1e-9:
            raise ValueError(f"fault rates must be in [0, 1] and sum to at most 1, got {rates}")
        if self.tps is not None and self.tps <= 0:
            raise ValueError(f"tps must be > 0, got {self.tps}")
        if min(self.latency_ms, self.latency_jitter_ms, self.slow_seconds) < 0:
            raise ValueError("latency_ms, latency_jitter_ms and slow_seconds must be >= 0")


BEHAVIOUR_KEYS = frozenset(f.name for f in fields(Behaviour))


def _checked(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(table) - BEHAVIOUR_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(BEHAVIOUR_KEYS)}"
        )
    return dict(table)


@dataclass(frozen=True)
class FaultConfig:
    default: Behaviour = Behaviour()
    per_operation: Mapping[str, Behaviour] = None  # type: ignore[assignment]
    seed: int | None = None

    def for_operation(self, operation: str) -> Behaviour:
        return (self.per_operation or {}).get(operation, self.default)

    @classmethod
    def load(
        cls, toml_path: Path | None = None, flags: Mapping[str, Any] | None = None, seed: int | None = None
    ) -> FaultConfig:
        """Merge the TOML file and the flags given explicitly (None values are 'not given')."""
        data: dict[str, Any] = {}
        if toml_path is not None:
            with toml_path.open("rb") as fh:
                data = tomllib.load(fh)
        operations = data.pop("operations", {})
        base = _checked(data.pop("defaults", {}), "[defaults]")
        if "seed" in data and seed is None:
            seed = int(data.pop("seed"))
        data.pop("seed", None)
        base.update(_checked(data, "top level"))
        base.update({k: v for k, v in (flags or {}).items() if v is not None})
        default = Behaviour(**base)
        per_op = {
            name: replace(default, **_checked(table, f"[operations.{name}]"))
            for name, table in operations.items()
        }
        return cls(default, per_op, seed)


@dataclass(frozen=True)
class Verdict:
    """What to do with one call: `error` code (or None), `drop`, and how long to wait before answering."""

    error: str | None = None
    drop: bool = False
    delay: float = 0.0


def region_quotas(flags: Sequence[str]) -> dict[str, float]:
    """`--quota-per-region REGION=TPS` flags -> {region: tps}; ValueError naming a bad one."""
    quotas: dict[str, float] = {}
    for flag in flags:
        region, _, tps = (part.strip() for part in flag.partition("="))
        try:
            value = float(tps)
        except ValueError:
            value = 0.0
        if not (region and 0 < value < math.inf):
            raise ValueError(f"--quota-per-region: expected REGION=TPS (TPS > 0), got {flag!r}")
        quotas[region] = value
    return quotas


class FaultInjector:
    """One token bucket per (region, operation) and the seeded RNG; `decide(operation, region)` is
    called once per call. `region_tps` holds every operation of a region to its own quota (the
    region comes from the request's signature; "" when unsigned: the configured behaviour)."""

    def __init__(
        self,
        config: FaultConfig,
        clock: Callable[[], float] = time.monotonic,
        region_tps: Mapping[str, float] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = random.Random(config.seed)
        self._buckets: dict[tuple[str, str], TokenBucket | None] = {}
        self._region_tps = dict(region_tps or {})
        self._lock = threading.Lock()

    def _bucket(self, operation: str, region: str, behaviour: Behaviour) -> TokenBucket | None:
        with self._lock:
            if (region, operation) not in self._buckets:
                self._buckets[region, operation] = (
                    None
                    if behaviour.tps is None
                    else TokenBucket(behaviour.tps, behaviour.burst or max(1.0, behaviour.tps), self._clock)
                )
            return self._buckets[region, operation]

    def behaviour(self, operation: str, region: str = "") -> Behaviour:
        """How `operation` behaves in `region`: its own, at the region's quota when it has one."""
        behaviour = self.config.for_operation(operation)
        if region in self._region_tps:
            return replace(behaviour, tps=self._region_tps[region])
        return behaviour

    def quota(self, operation: str, region: str = "") -> float | None:
        """The calls per second `operation` is held to in `region` (None: no quota)."""
        return self.behaviour(operation, region).tps

    def decide(self, operation: str, region: str = "") -> Verdict:
        behaviour = self.behaviour(operation, region)
        bucket = self._bucket(operation, region, behaviour)
        if bucket is not None and not bucket.try_acquire():
            return Verdict(error="ProvisionedThroughputExceededException")
        with self._lock:  # random.Random is not documented as thread-safe across draws
            draw = self._rng.random()
            jitter = self._rng.uniform(0, behaviour.latency_jitter_ms) if behaviour.latency_jitter_ms else 0.0
        delay = (behaviour.latency_ms + jitter) / 1000
        thresholds = (
            (behaviour.fault_rate_500, Verdict(error="InternalServerError", delay=delay)),
            (behaviour.fault_rate_throttle, Verdict(error="ThrottlingException", delay=delay)),
            (behaviour.fault_rate_drop, Verdict(drop=True, delay=delay)),
            (behaviour.fault_rate_slow, Verdict(delay=delay + behaviour.slow_seconds)),
        )
        edge = 0.0
        for rate, verdict in thresholds:
            edge += rate
            if draw < edge:
                return verdict
        return Verdict(delay=delay)
