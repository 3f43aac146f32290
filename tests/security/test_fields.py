"""The shared field types (``web/fields.py``) and the guards under them, without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from neocloud.db.types import UtcDateTime
from neocloud.fleet.spec import parse_spec
from neocloud.kernel.clock import ensure_utc
from neocloud.kernel.errors import InvalidRequest, ValidationFailed
from neocloud.studio.schemas import MAX_JSON_DEPTH, load_json, too_deep
from neocloud.web import fields


def _ok(kind: Any, value: Any) -> Any:
    return TypeAdapter(kind).validate_python(value)


def _refused(kind: Any, value: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(kind).validate_python(value)


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),  # no offset: UTC
        ("2026-03-01T12:00:00+05:00", datetime(2026, 3, 1, 7, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("8999-12-31T23:00:00-05:00", datetime(9000, 1, 1, 4, tzinfo=UTC)),
    ],
)
def test_utc_time_reads_any_offset_into_utc(given: str, utc: datetime) -> None:
    value = _ok(fields.UtcTime, given)
    assert (value, value.tzinfo) == (utc, UTC)


@pytest.mark.parametrize(
    "given",
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "9999-12-31", "1969-12-31", "x"],
)
def test_utc_time_out_of_range_is_a_validation_error(given: str) -> None:
    _refused(fields.UtcTime, given)


def test_ensure_utc_raises_value_error_past_the_range() -> None:
    with pytest.raises(ValueError, match="representable"):
        ensure_utc(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
    assert ensure_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_utc_column_refuses_an_unrepresentable_time_with_value_error() -> None:
    column = UtcDateTime()
    dialect = sa.create_engine("sqlite://").dialect
    with pytest.raises(ValueError, match="cannot be stored"):
        column.process_bind_param(
            datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))), dialect
        )


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (
            fields.Name,
            ["a", " Zürich ", "日本"],
            ["", "a\x00b", "a\tb", "a\x1b[31m", "a\u009bb", "x" * 201],
        ),
        (fields.Text, ["", "two\nlines\tand a tab"], ["a\x00", "a\x07", "x" * 1001]),
        (fields.Email, ["a@ex.com"], ["a\x00b@ex.com", "a b@ex.com", "no-at.example", 5]),
        (
            fields.Url,
            ["http://10.0.0.5:8000/v1", "https://h"],
            ["ftp://h/x", "http://", "http://a\x01b"],
        ),
        (fields.Count, [0, 1_000_000], [-1, 1_000_001, 2**63, False, True, 1.0, "1"]),
        (fields.Priority, [-1_000_000, 0], [2**63, -(2**63), False]),
        (fields.Tokens, [0, 10**12], [10**12 + 1, 10**35, False]),
        (
            fields.Amount,
            [Decimal("-5"), "0.000001", 10**12],
            ["1e30", "0.0000001", "NaN", "Infinity", True],
        ),
        (fields.Price, ["0", "2.95"], ["-1", "1e13"]),
        (fields.Fraction, ["0", "0.5", "1"], ["1.1", "-0.1"]),
        (fields.Currency, ["USD"], ["ZZZ", "XYZ", "EUR", "usd", ""]),
        (fields.CurrencyCode, ["USD", "ZZZ"], ["usd", "US", "USDX", 1]),
    ],
)
def test_field_types_take_the_good_and_refuse_the_bad(
    kind: Any, good: list[Any], bad: list[Any]
) -> None:
    for value in good:
        _ok(kind, value)
    for value in bad:
        _refused(kind, value)


def test_every_integer_bound_is_far_below_2_to_the_63() -> None:
    bounds = [fields.COUNT_MAX, fields.PRIORITY_MAX, fields.HOURS_MAX, fields.SECONDS_MAX]
    assert max([*bounds, fields.TOKENS_MAX, fields.AMOUNT_MAX]) < 2**53  # exact as a JSON number


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b'{"a": "' + b"[" * 5000 + b'"}', False),  # brackets in a string are text
        (b'{"a": "\\"' + b"[" * 5000 + b'"}', False),  # an escaped quote does not end it
        (b"[[1],[2]]," * 2000, False),  # many brackets, shallow
        (b'{"a":' * 5000, True),
    ],
)
def test_json_depth_is_measured_outside_strings(raw: bytes, deep: bool) -> None:
    assert too_deep(raw) is deep


def test_load_json_answers_400_for_deep_or_bad_json() -> None:
    for raw, code in ((b"[" * 100_000, "json_too_deep"), (b"{", "invalid_json")):
        with pytest.raises(InvalidRequest) as info:
            load_json(raw)
        assert (info.value.status, info.value.code) == (400, code)
    assert load_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


@pytest.mark.parametrize("text", ["version: 1\x07", "\x00", "levels: [\x1b]"])
def test_a_spec_with_a_control_character_is_invalid_yaml(text: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_spec(text)
    assert info.value.code == "invalid_yaml"
