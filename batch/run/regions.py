"""The driver's side of several regions (`rekognition.regions`): the run's `RegionPlan` (each region's
share of the images, from the quotas `batch.run.quotas` resolved; the input bucket's region, asked once)
and the cluster limiter's quota per (region, operation)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from batch.analyses.registry import REGISTRY
from batch.aws.s3 import bucket_region
from batch.config.model import RunConfig
from batch.core.regions import RegionPlan, limiter_key, region_weights
from batch.run.quotas import run_regions
from batch.run.summary import RunSummary

__all__ = ["limiter_quotas", "region_plan"]


def region_plan(config: RunConfig, summary: RunSummary, s3: Any) -> RegionPlan | None:
    """Where the run's stateless calls go; None when the run's region is unknown (no plan: every call
    in the client's region). One region: all of them there, no call to S3."""
    if not summary.region:
        return None
    regions = run_regions(config, summary.region)
    home = regions[0]
    if len(regions) == 1 or not summary.region_quotas:
        return RegionPlan(home, ((home, 1.0),), home)
    analyses = [
        REGISTRY[name]
        for name in config.analyses
        if REGISTRY[name].fans_out_with(config.analysis_settings[name])
    ]
    stateless = [op for analysis in analyses for op in analysis.operations]
    weights = region_weights({r: summary.region_quotas[r] for r in regions}, stateless)
    found = bucket_region(s3, config.bucket)
    if found is None:
        print(
            f"rekbatch: regions: the region of bucket {config.bucket} is unknown (GetBucketLocation "
            f"failed); images go as S3 references to {home} only, as bytes to the other regions",
            file=sys.stderr,
            flush=True,
        )
    return RegionPlan(home, tuple((region, weights[region]) for region in regions), found or home)


def limiter_quotas(summary: RunSummary, home: str) -> dict[str, float]:
    """The cluster limiter's buckets: one per operation, and with several regions one per (region,
    operation) (`batch.core.regions.limiter_key`), each at that region's quota."""
    by_region: Mapping[str, Mapping[str, float]] = summary.region_quotas
    if not by_region:
        return dict(summary.quotas)
    return {
        limiter_key(operation, region, home): tps
        for region, quotas in by_region.items()
        for operation, tps in quotas.items()
    }
