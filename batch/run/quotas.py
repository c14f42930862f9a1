"""The run's quota per operation, resolved once before anything is called (`batch.core.service_quotas`):
a quota the user set wins; the others are read from Service Quotas, else AWS's default for the region
with a note. With `rekognition.regions`, each region's quotas are resolved so (a quota the user set holds
in each region). The `rekbatch collection` commands resolve theirs the same way (`operation_quotas`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from batch.aws.service_quotas import read_applied_quotas
from batch.config.model import RunConfig
from batch.core.errors import ConfigError
from batch.core.regions import published_default
from batch.core.service_quotas import Quota, choose_quotas, fallback_note
from batch.run.plan import operation_owners
from batch.run.summary import RunSummary

__all__ = ["operation_quotas", "resolve_quotas", "run_regions"]


def resolve_quotas(config: RunConfig, summary: RunSummary) -> dict[str, float]:
    """Fill `summary.quotas` and `summary.quota_sources` for the run's operations (summed over the
    run's regions), and `summary.region_quotas` when there are several. Service Quotas is asked only
    when some operation has no quota the user set; an operation it cannot give gets AWS's default for
    the region, and one line on stderr says so. Returns the run's own region's quotas: those of the
    driver's calls (collections, references), made there."""
    regions = run_regions(config, summary.region)
    owners = operation_owners(config)
    chosen = {region: operation_quotas(config, owners, region) for region in regions}
    home = chosen[regions[0]]
    summary.quotas = {op: sum(chosen[region][op].tps for region in regions) for op in home}
    summary.quota_sources = {operation: quota.source for operation, quota in home.items()}
    if len(regions) > 1:
        summary.region_quotas = {
            region: {op: quota.tps for op, quota in quotas.items()} for region, quotas in chosen.items()
        }
    return {operation: quota.tps for operation, quota in home.items()}


def run_regions(config: RunConfig, home: str) -> tuple[str, ...]:
    """The run's regions, its own (`home`, where collections are) first, then the others as listed;
    ConfigError when `rekognition.regions` leaves out the run's region (found from the environment)."""
    listed = config.rekognition.regions
    if listed and home not in listed:
        raise ConfigError(
            f"rekognition.regions: must include the run's region ({home}), where collections are, "
            f"got {list(listed)!r}"
        )
    return (home, *(region for region in listed if region != home))


def operation_quotas(config: RunConfig, owners: Mapping[str, str], region: str) -> dict[str, Quota]:
    """Each operation of `owners` (operation -> the analysis whose quota setting it has) and its quota
    in `region`, with a line on stderr for those that fell back."""
    wanted = {
        operation: Quota(config.quota(name), config.quota_source(name) or "default")
        for operation, name in owners.items()
    }
    applied, reason = None, ""
    if any(quota.source == "default" for quota in wanted.values()):
        applied, reason = read_applied_quotas(config.rekognition, region=region)
    chosen = choose_quotas(wanted, applied, default=published_default(region))
    note = fallback_note(chosen, region, reason)
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    return chosen
