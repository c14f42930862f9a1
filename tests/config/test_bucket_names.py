"""S3's bucket naming rules (`bucket_name_problem`): a valid name passes, a broken one says why."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from batch.config.model import bucket_name_problem, parse_s3_url

VALID = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@given(st.from_regex(VALID, fullmatch=True))
def test_a_name_within_the_rules_passes_and_one_outside_says_why(name: str) -> None:
    broken = ".." in name or (re.fullmatch(r"[\d.]+", name) and name.count(".") == 3)
    broken = broken or name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
    broken = broken or name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    assert (bucket_name_problem(name) is None) == (not broken)


@given(st.text(min_size=1, max_size=80))
def test_what_the_url_pattern_of_old_refused_is_refused_with_a_reason(name: str) -> None:
    if not VALID.fullmatch(name) and "/" not in name:
        assert bucket_name_problem(name)


def test_common_names_pass() -> None:
    for name in ("rekbatch-demo", "my.bucket.eu", "abc", "a" * 63):
        assert bucket_name_problem(name) is None
        assert parse_s3_url(f"s3://{name}/p/q", "x") == (name, "p/q")
