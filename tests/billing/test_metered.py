"""Rating metered services (managed databases): per second, hours and GiB-months, clipped to
the period and ``as_of``, one line per (org, project, SKU), by the book in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from neocloud.billing.metered import DEFAULT_SERVICE_PRICES, Span, rate_spans
from neocloud.billing.rating import Period, PriceBook

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MARCH = Period(T0, datetime(2026, 4, 1, tzinfo=UTC))
BOOK = PriceBook("pb", {}, services=dict(DEFAULT_SERVICE_PRICES))


def span(sku: str, qty: str, start: timedelta, end: timedelta | None, i: str = "u1") -> Span:
    return Span(i, "org_a", None, sku, Decimal(qty), T0 + start, None if end is None else T0 + end)


def test_an_hour_of_a_small_database_and_its_storage() -> None:
    lines = rate_spans(
        [
            span("postgres.small.hour", "1", timedelta(hours=1), timedelta(hours=2)),
            span("postgres.storage.gib_month", "730", timedelta(hours=1), timedelta(hours=2)),
        ],
        BOOK,
        MARCH,
        as_of=MARCH.end,
    )
    by_sku = {ln.sku.code: ln for ln in lines}
    assert by_sku["postgres.small.hour"].amount.amount == Decimal("0.12")
    assert by_sku["postgres.small.hour"].gpu_hours == 1
    # 730 GiB for one hour at 0.20 per GiB-month of 730 hours: 0.20
    assert by_sku["postgres.storage.gib_month"].amount.amount == Decimal("0.20")
    assert by_sku["postgres.storage.gib_month"].gpu_hours == 730


def test_per_second_clipped_to_the_period_and_as_of() -> None:
    before = span("postgres.large.hour", "1", timedelta(hours=-5), timedelta(seconds=90))
    running = span("postgres.large.hour", "1", timedelta(hours=1), None, "u2")
    lines = rate_spans([before, running], BOOK, MARCH, as_of=T0 + timedelta(hours=1, minutes=30))
    (line,) = lines
    assert line.gpu_seconds == 90 + 1800
    assert line.fact_ids == ("u1", "u2")
    assert line.amount.amount == (Decimal(1890) / 3600 * Decimal("0.90")).quantize(Decimal("0.01"))


def test_nothing_outside_the_period_and_an_unpriced_sku_is_named() -> None:
    assert (
        rate_spans([span("x.hour", "1", timedelta(days=40), None)], BOOK, MARCH, as_of=MARCH.end)
        == ()
    )
    with pytest.raises(LookupError, match=r"x\.hour"):
        rate_spans([span("x.hour", "1", timedelta(0), None)], BOOK, MARCH, as_of=MARCH.end)


def test_a_new_book_prices_what_starts_after_it() -> None:
    later = PriceBook(
        "pb2",
        {},
        effective_from=T0 + timedelta(days=10),
        services={**DEFAULT_SERVICE_PRICES, "postgres.small.hour": Decimal("1")},
    )
    lines = rate_spans(
        [
            span("postgres.small.hour", "1", timedelta(0), timedelta(hours=1)),
            span("postgres.small.hour", "1", timedelta(days=11), timedelta(days=11, hours=1), "u2"),
        ],
        [BOOK, later],
        MARCH,
        as_of=MARCH.end,
    )
    assert sorted(ln.amount.amount for ln in lines) == [Decimal("0.12"), Decimal("1.00")]
