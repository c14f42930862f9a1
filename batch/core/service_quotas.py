"""Which calls-per-second quota each operation of a run is held to, and where it came from. Pure.

A quota set by the user wins (`--tps`: "flag"; `rekognition.tps` or `[quotas]` in the file or the
environment: "config"). Otherwise the account's applied quota, read from Service Quotas (service code
`rekognition`) in the run's region ("service-quotas"); otherwise the default ("default").

Service Quotas names each Rekognition Image operation's quota "Transactions per second per account for
the Amazon Rekognition Image operation <Operation>" and gives it a fixed code (`QUOTA_CODES`); a quota is
matched by its code first, then by that name. The codes and names are those Service Quotas lists for
Rekognition (docs/design/quotas.md names the source); the local stack answers with the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "QUOTA_CODES",
    "SOURCES",
    "Quota",
    "applied_quotas",
    "choose_quotas",
    "fallback_note",
    "quota_name",
    "quota_operation",
]

#: Where a quota came from, in order of precedence.
SOURCES = ("flag", "config", "service-quotas", "default")

#: Service Quotas' code of each Rekognition Image operation's calls-per-second quota.
QUOTA_CODES: Mapping[str, str] = {
    "CompareFaces": "L-73A341CE",
    "CreateCollection": "L-CE977716",
    "DeleteCollection": "L-5346A13A",
    "DeleteFaces": "L-220834FB",
    "DescribeCollection": "L-6FDFFAF5",
    "DetectFaces": "L-A5121FD7",
    "DetectLabels": "L-E29B542B",
    "DetectModerationLabels": "L-7F4D1AC4",
    "DetectProtectiveEquipment": "L-6F294C5B",
    "DetectText": "L-87CF5BA6",
    "GetCelebrityInfo": "L-973FFF99",
    "IndexFaces": "L-7C13EBAD",
    "ListCollections": "L-0366BB0F",
    "ListFaces": "L-970B5808",
    "RecognizeCelebrities": "L-5FF750C4",
    "SearchFaces": "L-99829151",
    "SearchFacesByImage": "L-43CBEB68",
}
_OPERATIONS_BY_CODE = {code: operation for operation, code in QUOTA_CODES.items()}
#: e.g. "... Amazon Rekognition Image operation DetectLabels", "... Image personal protective equipment
#: operation DetectProtectiveEquipment"; a colon after "operation" is tolerated (other families use one).
_NAME = re.compile(
    r"Transactions per second per account for the Amazon Rekognition Image "
    r"(?:[a-z ]+ )?operation:? ([A-Za-z]+)"
)


@dataclass(frozen=True)
class Quota:
    """An operation's calls per second across the whole run, and where that number came from."""

    tps: float
    source: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"quota source must be one of {SOURCES}, got {self.source!r}")
        if not (self.tps > 0 and math.isfinite(self.tps)):
            raise ValueError(f"quota must be a finite number > 0, got {self.tps!r}")


def quota_name(operation: str) -> str:
    """The name Service Quotas gives `operation`'s calls-per-second quota."""
    return f"Transactions per second per account for the Amazon Rekognition Image operation {operation}"


def quota_operation(quota: Mapping[str, Any]) -> str | None:
    """The Rekognition Image operation a Service Quotas `ServiceQuota` limits, by its code, else its name;
    None for any other quota (Video, Custom Labels, counts of resources...)."""
    code = quota.get("QuotaCode")
    if isinstance(code, str) and code in _OPERATIONS_BY_CODE:
        return _OPERATIONS_BY_CODE[code]
    name = quota.get("QuotaName")
    match = _NAME.fullmatch(name.strip()) if isinstance(name, str) else None
    return match.group(1) if match else None


def applied_quotas(listed: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Calls per second per operation from the `Quotas` of `ListServiceQuotas` pages; a quota with no
    usable value (missing, zero, negative, not finite) is left out, as if unknown."""
    found: dict[str, float] = {}
    for quota in listed:
        operation, value = quota_operation(quota), quota.get("Value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if operation and value > 0 and math.isfinite(value):
            found[operation] = float(value)
    return found


def choose_quotas(
    set_by_user: Mapping[str, Quota], applied: Mapping[str, float] | None, default: float
) -> dict[str, Quota]:
    """Each operation's quota: one the user set (source "flag" or "config") as it is; else the applied
    quota Service Quotas gave (`applied`; None: it could not be read); else `default`.

    `set_by_user` names every operation of the run; those without a user's quota have source
    "default" there (their value is ignored)."""
    chosen: dict[str, Quota] = {}
    for operation, quota in set_by_user.items():
        if quota.source in ("flag", "config"):
            chosen[operation] = quota
        elif applied is not None and operation in applied:
            chosen[operation] = Quota(applied[operation], "service-quotas")
        else:
            chosen[operation] = Quota(default, "default")
    return chosen


def fallback_note(chosen: Mapping[str, Quota], region: str, reason: str) -> str | None:
    """One line for stderr when an operation fell back to the default: why (`reason`: the error, or ""
    when Service Quotas answered without that operation's quota) and which operations; None if none."""
    fallen = [op for op, quota in chosen.items() if quota.source == "default"]
    if not fallen:
        return None
    default = chosen[fallen[0]].tps
    why = (
        f"Service Quotas not readable in {region or 'the default region'} ({reason})"
        if reason
        else f"Service Quotas in {region or 'the default region'} has no applied quota for them"
    )
    return (
        f"rekbatch: quotas: {why}; using the default {default:g} calls/s for {', '.join(fallen)} "
        "(set [quotas] or --tps to choose)"
    )
