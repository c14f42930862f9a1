"""The pure logic of several regions: shares from quotas, the choice of an image's region, limiter keys."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.core.image_checks import MAX_REQUEST_BYTES
from batch.core.regions import (
    RegionBalancer,
    RegionPlan,
    choose_region,
    key_fraction,
    limiter_key,
    parse_regions,
    published_default,
    region_weights,
    split_region,
)

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
OPERATIONS = ("DetectLabels", "DetectFaces", "DetectText")
quota = st.floats(min_value=0.5, max_value=1000, allow_nan=False)
region_quotas = st.dictionaries(
    st.sampled_from(REGIONS),
    st.fixed_dictionaries(dict.fromkeys(OPERATIONS, quota)),
    min_size=1,
)


@given(region_quotas)
def test_shares_sum_to_one_in_proportion_to_each_regions_smallest_quota(
    quotas: dict[str, dict[str, float]],
) -> None:
    weights = region_weights(quotas, OPERATIONS)
    assert sum(weights.values()) == pytest.approx(1.0)
    floors = {region: min(by_op.values()) for region, by_op in quotas.items()}
    for region, weight in weights.items():
        assert weight == pytest.approx(floors[region] / sum(floors.values()))


@given(region_quotas)
def test_at_those_shares_no_operation_of_any_region_is_asked_for_more_than_its_quota(
    quotas: dict[str, dict[str, float]],
) -> None:
    """The images per second the regions sustain together is the sum of their smallest quotas; each
    region then gets its share of it, within every one of its operations' quotas."""
    weights = region_weights(quotas, OPERATIONS)
    throughput = sum(min(by_op.values()) for by_op in quotas.values())
    for region, by_op in quotas.items():
        for tps in by_op.values():
            assert weights[region] * throughput <= tps * (1 + 1e-9)


def test_a_region_without_a_quota_for_an_operation_gets_no_images() -> None:
    weights = region_weights({"us-east-1": {"DetectLabels": 50.0}, "us-west-2": {}}, ["DetectLabels"])
    assert weights == {"us-east-1": 1.0, "us-west-2": 0.0}
    assert region_weights({"us-east-1": {}, "us-west-2": {}}, []) == {"us-east-1": 1.0, "us-west-2": 0.0}
    with pytest.raises(ValueError, match="no region has a quota"):
        region_weights({"us-east-1": {}}, ["DetectLabels"])


@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=5).filter(
        lambda ws: sum(ws) > 0
    ),
    st.integers(min_value=1, max_value=2000),
)
def test_evenly_spread_fractions_land_in_each_region_by_its_weight(weights: list[float], n: int) -> None:
    total = sum(weights)
    named = [(f"r{i}", w / total) for i, w in enumerate(weights)]
    chosen = Counter(choose_region(named, (i + 0.5) / n) for i in range(n))
    for name, weight in named:
        assert abs(chosen[name] - weight * n) <= 1 + 1e-6 * n, (name, weight, chosen)
        if weight == 0:
            assert chosen[name] == 0


@given(st.text(max_size=40), st.text(max_size=40))
def test_an_images_fraction_is_fixed_by_its_key_and_etag(key: str, etag: str) -> None:
    fraction = key_fraction(key, etag)
    assert 0 <= fraction < 1
    assert key_fraction(key, etag) == fraction


def test_hashed_images_split_close_to_the_shares() -> None:
    plan = RegionPlan("us-east-1", (("us-east-1", 0.75), ("us-west-2", 0.25)), "us-east-1")
    chosen = Counter(plan.region_for(f"photos/{i:05d}.jpg", f'"{i:032x}"', 1000) for i in range(8000))
    assert chosen["us-west-2"] / 8000 == pytest.approx(0.25, abs=0.02)


def test_an_image_too_large_for_bytes_stays_where_it_can_go_as_a_reference() -> None:
    everywhere_else = RegionPlan("us-east-1", (("us-east-1", 0.0), ("us-west-2", 1.0)), "us-east-1")
    assert everywhere_else.region_for("a.jpg", "e", MAX_REQUEST_BYTES) == "us-west-2"
    assert everywhere_else.as_bytes("us-west-2")
    assert everywhere_else.region_for("a.jpg", "e", MAX_REQUEST_BYTES + 1) == "us-east-1"
    assert not everywhere_else.as_bytes("us-east-1")
    # A bucket in a region the run does not use: references go to the run's region, as in one region.
    elsewhere = RegionPlan("us-east-1", (("us-east-1", 0.5), ("us-west-2", 0.5)), "eu-west-1")
    assert elsewhere.s3_region == "us-east-1"
    bucket_in_west = RegionPlan("us-east-1", (("us-east-1", 0.5), ("us-west-2", 0.5)), "us-west-2")
    assert bucket_in_west.as_bytes("us-east-1")
    assert not bucket_in_west.as_bytes("us-west-2")


@given(
    st.lists(st.floats(min_value=0.05, max_value=1), min_size=2, max_size=4),
    st.integers(min_value=1, max_value=1500),
    st.integers(min_value=1, max_value=8),
)
def test_the_balancer_keeps_every_region_within_slack_of_its_share(
    raw: list[float], images: int, slack: int
) -> None:
    """Placed in order, no region is ever more than `slack` (+1 for the image being placed) images
    ahead of its share, and an image leaves its hash's region only when that region is."""
    total = sum(raw)
    plan = RegionPlan("r0-x-1", tuple((f"r{i}-x-1", w / total) for i, w in enumerate(raw)), "r0-x-1")
    weights = dict(plan.weights)
    balancer, placed = RegionBalancer(plan, slack), Counter[str]()
    for i in range(images):
        key, etag = f"k/{i}.jpg", f"e{i}"
        own = plan.region_for(key, etag, 1000)
        region = balancer.place(key, etag, 1000)
        if placed[own] + 1 - weights[own] * (i + 1) <= slack:
            assert region == own
        placed[region] += 1
        for name, weight in plan.weights:
            assert placed[name] - weight * (i + 1) <= slack + 1


def test_most_images_keep_their_own_region() -> None:
    plan = RegionPlan("us-east-1", (("us-east-1", 0.5), ("us-west-2", 0.5)), "us-east-1")
    balancer = RegionBalancer(plan)
    keys = [(f"photos/{i:05d}.jpg", f'"{i:032x}"') for i in range(2000)]
    placed = [balancer.place(key, etag, 1000) for key, etag in keys]
    moved = sum(
        region != plan.region_for(key, etag, 1000) for region, (key, etag) in zip(placed, keys, strict=True)
    )
    assert moved / len(keys) < 0.1
    assert abs(Counter(placed)["us-west-2"] - 1000) <= 5


def test_an_image_too_large_for_bytes_is_never_moved() -> None:
    plan = RegionPlan("us-east-1", (("us-east-1", 0.1), ("us-west-2", 0.9)), "us-east-1")
    balancer = RegionBalancer(plan, slack=1)
    large = [balancer.place(f"{i}.jpg", "e", MAX_REQUEST_BYTES + 1) for i in range(20)]
    assert set(large) == {"us-east-1"}


@given(st.sampled_from(OPERATIONS), st.sampled_from(REGIONS), st.sampled_from(REGIONS))
def test_limiter_keys_are_the_operation_at_home_and_name_the_region_elsewhere(
    operation: str, region: str, home: str
) -> None:
    key = limiter_key(operation, region, home)
    assert (key == operation) == (region == home)
    assert split_region(key) == (operation, None if region == home else region)


def test_region_lists_and_published_defaults() -> None:
    assert parse_regions(" us-east-1, us-west-2 ,") == ("us-east-1", "us-west-2")
    assert parse_regions(["us-gov-west-1"]) == ("us-gov-west-1",)
    for bad in ("US-EAST-1", "us-east", "useast1", "us-east-1,us-east-1"):
        with pytest.raises(ValueError, match=r"region name|twice"):
            parse_regions(bad)
    assert [published_default(r) for r in REGIONS] == [50.0, 50.0, 50.0, 5.0]
