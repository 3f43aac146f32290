from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neocloud.kernel.clock import SystemClock, VirtualClock, ensure_utc, rfc3339
from neocloud.kernel.errors import IllegalTransition, NotFound, RateLimited
from neocloud.kernel.money import Money, to_decimal


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now() == clock.now()
    assert clock.advance(90) == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
    clock.advance(timedelta(days=1))
    assert clock.now().day == 2
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(datetime(2025, 1, 1, tzinfo=UTC))


def test_system_clock_is_utc_aware() -> None:
    assert SystemClock().now().tzinfo is not None


def test_rfc3339() -> None:
    assert rfc3339(datetime(2026, 5, 1, 8, 30, tzinfo=UTC)) == "2026-05-01T08:30:00Z"
    naive = datetime(2026, 5, 1, 8, 30, 0, 250000)
    assert rfc3339(naive) == "2026-05-01T08:30:00.250Z"
    assert ensure_utc(naive).tzinfo == UTC


def test_money_is_exact_and_refuses_floats() -> None:
    total = Money.of("0.10") + Money.of("0.20")
    assert total == Money.of("0.30")
    with pytest.raises(TypeError):
        Money.of(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _ = Money.of("1") * 1.5  # type: ignore[operator]
    with pytest.raises(ValueError, match="cannot combine USD with EUR"):
        _ = Money.of("1") + Money.of("1", "EUR")
    with pytest.raises(ValueError, match="ISO 4217"):
        Money.of("1", "usd")


def test_money_rounds_half_up_once() -> None:
    assert Money.of("2.345").rounded() == Money.of("2.35")
    assert Money.of("-2.345").rounded() == Money.of("-2.35")
    assert Money.of("12.5").to_wire() == {"amount": "12.5", "currency": "USD"}
    assert Money.from_wire({"amount": "3.10", "currency": "EUR"}) == Money.of("3.10", "EUR")


@given(st.lists(st.decimals(min_value=-(10**6), max_value=10**6, places=6), max_size=50))
def test_money_sum_matches_decimal_sum(amounts: list[Decimal]) -> None:
    total = Money.zero()
    for amount in amounts:
        total = total + Money(amount)
    assert total.amount == sum(amounts, Decimal(0))


def test_to_decimal_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a decimal"):
        to_decimal("12,5")


def test_error_body_shape() -> None:
    body = NotFound("no node node_x", code="node_not_found", param="node_id").to_body()
    assert body == {
        "error": {
            "type": "not_found_error",
            "code": "node_not_found",
            "message": "no node node_x",
            "param": "node_id",
        }
    }


def test_illegal_transition_names_allowed_states() -> None:
    exc = IllegalTransition("node", "in_use", "available", ["releasing", "failed"])
    assert exc.status == 409
    assert exc.details["allowed"] == ["failed", "releasing"]
    assert "failed, releasing" in exc.message


def test_rate_limited_carries_retry_after() -> None:
    exc = RateLimited("slow down", retry_after_s=2.5)
    assert exc.status == 429
    assert exc.retry_after_s == 2.5
