"""Issue 13, finding 8 (billing's part): a price book stores only names that refer to something
(both backends). SKUs resolve to their canonical GPU model through the fleet catalog
(``H100.spot`` prices ``H100-SXM-80GB.spot``) or are refused with 422 naming the field and
listing the valid models; token prices take well-formed model ids only; the currency is one the
platform bills in."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from neocloud.billing.pricebook import default_gpu_prices
from neocloud.billing.tables import PriceBookRow
from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock, rfc3339
from neocloud.studio.pricing import publish_missing

H100 = "H100-SXM-80GB"


def _start(clock: VirtualClock, minutes: int = 1) -> str:
    return rfc3339(clock.now() + timedelta(minutes=minutes))


def _refused(admin: Client, clock: VirtualClock, **body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        admin.price_books.publish(_start(clock), **body)
    return info.value


def test_an_alias_sku_prices_the_canonical_one(admin: Client, clock: VirtualClock) -> None:
    book = admin.price_books.publish(
        _start(clock), gpu_prices={"H100.spot": "1.11", "h100-sxm-80gb.on_demand": "2.22"}
    )
    assert book["gpu_prices"][f"{H100}.spot"] == "1.11"
    assert book["gpu_prices"][f"{H100}.on_demand"] == "2.22"
    assert "H100.spot" not in book["gpu_prices"]
    assert "h100-sxm-80gb.on_demand" not in book["gpu_prices"]


def test_an_unknown_gpu_model_is_refused_naming_the_field(
    admin: Client, clock: VirtualClock
) -> None:
    err = _refused(admin, clock, gpu_prices={"NOPE.spot": "1.00"})
    assert (err.status, err.code, err.param) == (422, "unknown_gpu_model", "gpu_prices.NOPE.spot")
    assert H100 in err.details["valid"]


def test_an_alias_and_its_canonical_name_together_are_refused(
    admin: Client, clock: VirtualClock
) -> None:
    err = _refused(admin, clock, gpu_prices={"H100.spot": "1.00", f"{H100}.spot": "2.00"})
    assert (err.status, err.code) == (422, "duplicate_sku")


def test_an_unsupported_currency_is_refused_listing_the_supported(
    admin: Client, clock: VirtualClock
) -> None:
    for currency in ("ZZZ", "XYZ", "EUR"):
        err = _refused(admin, clock, currency=currency)
        assert (err.status, err.code, err.param) == (422, "unsupported_currency", "currency")
        assert err.details["supported"] == ["USD"]


@pytest.mark.parametrize("model", ["", "llama?", "llama\u0000", "a b", "x" * 129, "-lead"])
def test_a_malformed_token_price_model_is_refused(
    admin: Client, clock: VirtualClock, model: str
) -> None:
    prices = {model: {"input_per_1m": "0.1", "output_per_1m": "0.2"}}
    err = _refused(admin, clock, token_prices=prices)
    assert (err.status, err.code, err.param) == (422, "invalid_model_id", "token_prices")


def test_well_formed_model_ids_are_stored(admin: Client, clock: VirtualClock) -> None:
    prices = {"meta/llama-3.1-8b:instruct": {"input_per_1m": "0.1", "output_per_1m": "0.2"}}
    book = admin.price_books.publish(_start(clock), token_prices=prices)
    assert list(book["token_prices"]) == ["meta/llama-3.1-8b:instruct"]


def test_a_book_stored_with_an_alias_before_this_fix_carries_over_canonically(
    db: Database, clock: VirtualClock
) -> None:
    """The Studio republishes the book in force to add token prices (at start-up, for a new
    built-in model): an alias stored beside its canonical SKU must not make that a 422."""
    now = clock.now()
    stale = {sku.code: str(p) for sku, p in default_gpu_prices().items()}
    stale |= {"H100.spot": "1.11", "NOPE.spot": "9.99"}
    with db.transaction() as s:
        s.add(
            PriceBookRow(
                id="pb_stale",
                effective_from=now,
                currency="USD",
                gpu_prices=stale,
                token_prices={},
                note=None,
                created_by="key_op",
                created_at=now,
            )
        )
    clock.advance(60)
    prices = {"neocloud/echo": {"input_per_1m": Decimal("1"), "output_per_1m": Decimal("2")}}
    row = publish_missing(db=db, clock=clock, prices=prices)
    assert row is not None
    assert row.gpu_prices[f"{H100}.spot"] == "1.11"  # the price the operator gave, canonical
    assert "H100.spot" not in row.gpu_prices
    assert "NOPE.spot" not in row.gpu_prices
    assert list(row.token_prices) == ["neocloud/echo"]
