from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neocloud.kernel.ids import PREFIXES, is_id, new_id, parse_id


def test_id_has_prefix_and_26_char_body() -> None:
    value = new_id("node")
    prefix, body = parse_id(value, "node")
    assert prefix == "node"
    assert len(body) == 26


def test_ids_made_in_a_burst_are_unique_and_increasing() -> None:
    ids = [new_id("evt") for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_later_times_sort_later(moment: datetime) -> None:
    at = moment.replace(tzinfo=UTC)
    earlier = new_id("org", at=at)
    later = new_id("org", at=at + timedelta(milliseconds=2))
    assert earlier < later


def test_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown id prefix"):
        new_id("zzz")


@pytest.mark.parametrize(
    "bad", ["", "node_", "node_short", "NODE_01ARZ3NDEKTSV4RRFFQ69G5FAV", "x" * 40]
)
def test_malformed_ids_are_rejected(bad: str) -> None:
    assert not is_id(bad)


def test_wrong_prefix_is_rejected() -> None:
    with pytest.raises(ValueError, match="is not a organization id"):
        parse_id(new_id("node"), "org")


def test_prefixes_are_short_lowercase() -> None:
    for prefix in PREFIXES:
        assert prefix.isalnum()
        assert prefix.islower()
        assert len(prefix) <= 8
