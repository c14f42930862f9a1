"""batch.aws.s3's pure parts."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import botocore.utils
from hypothesis import given
from hypothesis import strategies as st

from batch.aws.s3 import parse_timestamp

instants = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)).map(
    lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC)
)


@given(instants)
def test_s3s_listing_timestamps_parse_to_the_instant_botocore_gives(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"  # ListObjectsV2
    parsed = parse_timestamp(text)
    assert parsed == botocore.utils.parse_timestamp(text) == moment
    assert parsed.utcoffset() is not None


@given(instants)
def test_s3s_header_dates_parse_to_the_instant_botocore_gives(moment: datetime) -> None:
    text = format_datetime(moment.replace(microsecond=0), usegmt=True)  # Last-Modified
    assert parse_timestamp(text) == botocore.utils.parse_timestamp(text) == moment.replace(microsecond=0)


@given(st.one_of(st.integers(0, 2**33), st.sampled_from(["1700000000", "2026-11-26T00:10:00", "20261126"])))
def test_other_forms_are_left_to_botocore(value: object) -> None:
    assert parse_timestamp(value) == botocore.utils.parse_timestamp(value)
