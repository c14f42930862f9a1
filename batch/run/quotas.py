"""The run's quota per operation, resolved once before anything is called (`batch.core.service_quotas`):
a quota the user set wins; the others are read from Service Quotas, else the default with a note. The
`rekbatch collection` commands resolve theirs the same way (`operation_quotas`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from batch.aws.service_quotas import read_applied_quotas
from batch.config.model import RunConfig
from batch.core.service_quotas import Quota, choose_quotas, fallback_note
from batch.run.plan import operation_owners
from batch.run.summary import RunSummary

__all__ = ["operation_quotas", "resolve_quotas"]


def resolve_quotas(config: RunConfig, summary: RunSummary) -> None:
    """Fill `summary.quotas` and `summary.quota_sources` for the run's operations."""
    chosen = operation_quotas(config, operation_owners(config), summary.region)
    summary.quotas = {operation: quota.tps for operation, quota in chosen.items()}
    summary.quota_sources = {operation: quota.source for operation, quota in chosen.items()}


def operation_quotas(config: RunConfig, owners: Mapping[str, str], region: str) -> dict[str, Quota]:
    """Each operation of `owners` (operation -> the analysis whose quota setting it has) and its quota.
    Service Quotas is asked only when some operation has no quota the user set; an operation it cannot
    give gets `rekognition.tps`'s default, and one line on stderr says so."""
    wanted = {
        operation: Quota(config.quota(name), config.quota_source(name) or "default")
        for operation, name in owners.items()
    }
    applied, reason = None, ""
    if any(quota.source == "default" for quota in wanted.values()):
        applied, reason = read_applied_quotas(config.rekognition)
    chosen = choose_quotas(wanted, applied, default=config.rekognition.tps)
    note = fallback_note(chosen, region, reason)
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    return chosen
