"""One price source: what compute shows and quotes is what billing charges (both backends)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from neocloud.client import Client
from neocloud.compute.domain import CapacityClass, hourly_price
from neocloud.compute.prices import CATALOG_PRICES, GpuPrices, PriceKey
from neocloud.compute.worker import Worker
from neocloud.fleet.catalog import CATALOG
from neocloud.kernel.clock import VirtualClock, rfc3339
from neocloud.kernel.money import Money

H100 = "H100-SXM-80GB"


def _amount(money: dict[str, str]) -> Decimal:
    assert money["currency"] == "USD"
    return Decimal(money["amount"])


def test_without_a_book_every_price_is_the_catalogs() -> None:
    prices = CATALOG_PRICES.prices_at(None)  # type: ignore[arg-type]
    for model in CATALOG:
        for cls in (CapacityClass.ON_DEMAND, CapacityClass.SPOT):
            assert prices.per_gpu_hour(model.id, cls) == hourly_price(model, cls)
        # reserved instances show the on-demand price: their reservation is what is sold
        assert prices.per_gpu_hour(model.id, CapacityClass.RESERVED) == hourly_price(
            model, CapacityClass.ON_DEMAND
        )
    # a capacity block: list less 15 %, at the price book's 4 places (2.99 -> 2.5415)
    assert prices.reserved_per_gpu_hour(H100) == Money.of("2.5415")


def test_a_book_entry_wins_and_an_unpriced_sku_keeps_the_catalog_price() -> None:
    prices = GpuPrices({PriceKey(H100, "spot"): Money.of("1.11")})
    assert prices.per_gpu_hour(H100, CapacityClass.SPOT) == Money.of("1.11")
    assert prices.per_gpu_hour(H100, CapacityClass.ON_DEMAND) == Money.of("2.99")
    assert prices.reserved_per_gpu_hour(H100, "1y") == Money.of("2.5415")


def test_after_a_book_is_published_shown_quoted_and_invoiced_prices_agree(
    admin: Client, fleet: Client, acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    period = clock.now().strftime("%Y-%m")
    admin.price_books.publish(
        rfc3339(clock.now()),
        gpu_prices={
            f"{H100}.on_demand": "3.50",
            f"{H100}.spot": "1.25",
            f"{H100}.reserved.1m": "2.80",
        },
    )

    (eight,) = [t for t in acme.instance_types.list(gpu_model="H100") if t["gpus"] == 8]
    assert _amount(eight["price_per_hour"]["on_demand"]) == Decimal("28.00")
    assert _amount(eight["price_per_hour"]["spot"]) == Decimal("10.00")

    inst = acme.instances.create("8xH100")
    assert _amount(inst["price_per_hour"]) == Decimal("28.00")
    spot = acme.instances.create("1xH100", cls="spot")
    assert _amount(spot["price_per_hour"]) == Decimal("1.25")
    cluster = acme.clusters.create("H100", 2)
    assert _amount(cluster["price_per_hour"]) == Decimal("56.00")  # 2 nodes x 8 GPUs x 3.50

    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "running"
    assert acme.instances.get(inst["id"])["price_per_hour"] == inst["price_per_hour"]
    assert acme.clusters.get(cluster["id"])["price_per_hour"] == cluster["price_per_hour"]

    (offer, *_) = acme.reservations.offerings("H100", 1, 24)
    assert _amount(offer["price"]) == Decimal("537.60")  # 8 GPUs x 24 h x 2.80
    rsv = acme.reservations.buy(offer["id"])
    assert _amount(rsv["price"]) == Decimal("537.60")
    worker.run_once()
    clock.advance(3600)

    lines = {line["sku"]: line for line in acme.invoices.preview(org, period)["lines"]}
    assert _amount(lines[f"{H100}.on_demand"]["unit_price"]) == Decimal("3.50")
    assert _amount(lines[f"{H100}.spot"]["unit_price"]) == Decimal("1.25")
    reserved = lines[f"{H100}.reserved.1m"]
    assert _amount(reserved["unit_price"]) == Decimal("2.80")
    # an hour of the instance and the cluster's two nodes, at the price they showed
    on_demand = lines[f"{H100}.on_demand"]
    assert Decimal(on_demand["gpu_seconds"]) == 24 * 3600
    assert _amount(on_demand["amount"]) == Decimal("84.00")


def test_a_book_published_for_later_changes_prices_when_it_takes_effect(
    admin: Client, acme: Client, clock: VirtualClock
) -> None:
    tomorrow = clock.now() + timedelta(days=1)
    admin.price_books.publish(rfc3339(tomorrow), gpu_prices={f"{H100}.on_demand": "4.00"})
    inst = acme.instances.create("1xH100")
    assert _amount(inst["price_per_hour"]) == Decimal("2.99")  # the book is not in force yet
    clock.advance(86_400)
    assert _amount(acme.instances.get(inst["id"])["price_per_hour"]) == Decimal("4.00")
