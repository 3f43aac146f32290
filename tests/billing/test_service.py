"""Billing services on a real database (both backends): price book versions, usage events."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from neocloud.billing import service
from neocloud.billing.rating import ON_DEMAND, Sku
from neocloud.billing.usage import MAX_BATCH, UsageEvent, record_usage_events
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
TENANT = Principal("key_t", "usr_t", "org_t", Role.OWNER, is_operator=False)
H100 = "H100-SXM-80GB"


def _publish(db: Database, clock: VirtualClock, at_hours: float, price: str) -> str:
    row = service.publish_price_book(
        db=db,
        clock=clock,
        principal=OPERATOR,
        effective_from=clock.now() + timedelta(hours=at_hours),
        gpu_prices={f"{H100}.on_demand": Decimal(price)},
        token_prices={"llama": {"input_per_1m": Decimal("0.2"), "output_per_1m": Decimal("0.6")}},
    )
    return row.id


def test_price_book_versions_take_effect_in_order(db: Database, clock: VirtualClock) -> None:
    with pytest.raises(NotFound):
        service.get_current_price_book(db=db, clock=clock)
    first = _publish(db, clock, 0, "2.95")
    second = _publish(db, clock, 24, "2.50")
    assert service.get_current_price_book(db=db, clock=clock).id == first
    start = clock.now()
    clock.advance(timedelta(days=2))
    current = service.get_current_price_book(db=db, clock=clock)
    assert current.id == second
    assert current.gpu_prices[f"{H100}.spot"]  # defaults fill unlisted SKUs
    with db.transaction() as s:
        assert service.price_book_at(s, start).price(Sku(H100, ON_DEMAND)) == Decimal("2.95")
        assert service.price_book_at(s, clock.now()).price(Sku(H100, ON_DEMAND)) == Decimal("2.50")
        before = service.price_book_at(s, start - timedelta(days=1))
        assert before.version == "pb_default"


def test_price_book_publish_is_refused_when_wrong(db: Database, clock: VirtualClock) -> None:
    _publish(db, clock, 1, "2.95")
    with pytest.raises(Conflict, match="already takes effect"):
        _publish(db, clock, 1, "2.00")
    with pytest.raises(ValidationFailed, match="past"):
        _publish(db, clock, -1, "2.00")
    with pytest.raises(PermissionDenied):
        service.publish_price_book(
            db=db,
            clock=clock,
            principal=TENANT,
            effective_from=clock.now(),
            gpu_prices={},
            token_prices={},
        )
    with pytest.raises(ValidationFailed, match="not a SKU") as err:
        service.publish_price_book(
            db=db,
            clock=clock,
            principal=OPERATOR,
            effective_from=clock.now() + timedelta(hours=2),
            gpu_prices={"H100.reserved.5y": Decimal(1)},
            token_prices={},
        )
    assert err.value.param == "gpu_prices.H100.reserved.5y"


def _event(i: int, clock: VirtualClock, *, late: timedelta = timedelta(0)) -> UsageEvent:
    return UsageEvent(
        id=f"ev-{i}",
        source="studio",
        type="tokens",
        subject="llama",
        time=clock.now() - late,
        data={"input_tokens": 10, "output_tokens": 5},
    )


def test_usage_events_are_idempotent_per_org_and_source(db: Database, clock: VirtualClock) -> None:
    batch = [_event(i, clock) for i in range(3)]
    first = record_usage_events(db=db, clock=clock, org_id="org_a", events=batch)
    assert (first.accepted, first.duplicates) == (3, 0)
    again = [*batch[1:], _event(3, clock)]
    second = record_usage_events(db=db, clock=clock, org_id="org_a", events=again)
    assert (second.accepted, second.duplicates) == (1, 2)
    other = record_usage_events(db=db, clock=clock, org_id="org_b", events=batch)
    assert other.accepted == 3  # the key is (org, source, id)


def test_usage_events_up_to_35_days_late(db: Database, clock: VirtualClock) -> None:
    ok = [_event(0, clock, late=timedelta(days=35))]
    assert record_usage_events(db=db, clock=clock, org_id="org_a", events=ok).accepted == 1
    batch = [_event(1, clock), _event(2, clock, late=timedelta(days=35, seconds=1))]
    with pytest.raises(ValidationFailed) as err:
        record_usage_events(db=db, clock=clock, org_id="org_a", events=batch)
    assert err.value.param == "events[1].time"
    assert err.value.details["rejected"] == [{"index": 1, "id": "ev-2", "reason": "too_late"}]
    big = [_event(i, clock) for i in range(MAX_BATCH + 1)]
    with pytest.raises(ValidationFailed, match="at most 1000"):
        record_usage_events(db=db, clock=clock, org_id="org_a", events=big)
