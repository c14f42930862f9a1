"""The run's quota per operation, resolved once before anything is called (`batch.core.service_quotas`):
a quota the user set wins; the others are read from Service Quotas, else the default with a note."""

from __future__ import annotations

import sys

from batch.aws.service_quotas import read_applied_quotas
from batch.config.model import RunConfig
from batch.core.service_quotas import Quota, choose_quotas, fallback_note
from batch.run.plan import operation_owners
from batch.run.summary import RunSummary

__all__ = ["resolve_quotas"]


def resolve_quotas(config: RunConfig, summary: RunSummary) -> None:
    """Fill `summary.quotas` and `summary.quota_sources` for the run's operations. Service Quotas is
    asked only when some operation has no quota the user set; an operation it cannot give gets
    `rekognition.tps`'s default, and one line on stderr says so."""
    wanted = {
        operation: Quota(config.quota(name), config.quota_source(name) or "default")
        for operation, name in operation_owners(config).items()
    }
    applied, reason = None, ""
    if any(quota.source == "default" for quota in wanted.values()):
        applied, reason = read_applied_quotas(config.rekognition)
    chosen = choose_quotas(wanted, applied, default=config.rekognition.tps)
    note = fallback_note(chosen, summary.region, reason)
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    summary.quotas = {operation: quota.tps for operation, quota in chosen.items()}
    summary.quota_sources = {operation: quota.source for operation, quota in chosen.items()}
