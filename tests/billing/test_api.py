"""Billing through the API and SDK, with facts made by compute (both backends)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from compute.helpers import tenant_client
from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.fleet import service as fleet_service
from neocloud.fleet.domain import CheckStatus
from neocloud.fleet.service import CheckResult
from neocloud.kernel.clock import VirtualClock, rfc3339

H100 = "H100-SXM-80GB"


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def _org_id(client: Client) -> str:
    return str(client.get("orgs")["data"][0]["id"])


def test_operator_publishes_price_books_tenants_read(
    admin: Client, acme: Client, clock: VirtualClock
) -> None:
    assert _error(acme.price_books.current).status == 404
    start = rfc3339(clock.now() + timedelta(minutes=1))
    book = admin.price_books.publish(start, gpu_prices={f"{H100}.on_demand": "2.95"})
    assert book["id"].startswith("pb_")
    assert book["object"] == "price_book"
    assert _error(admin.price_books.publish, start).status == 409
    assert _error(acme.price_books.publish, rfc3339(clock.now() + timedelta(days=1))).status == 403
    clock.advance(60)
    current = acme.price_books.current()
    assert current["gpu_prices"][f"{H100}.on_demand"] == "2.95"
    assert current["gpu_prices"][f"{H100}.reserved.1y"]


def test_usage_events_count_replays_once(admin: Client, acme: Client, clock: VirtualClock) -> None:
    org = _org_id(acme)
    event = {
        "id": "ev-1",
        "source": "studio",
        "type": "tokens",
        "subject": "llama",
        "time": rfc3339(clock.now()),
        "data": {"input_tokens": 100},
    }
    sent = admin.usage.send([event], org_id=org)
    assert sent == {"object": "usage_batch", "accepted": 1, "duplicates": 0}
    assert admin.usage.send([event], org_id=org)["duplicates"] == 1
    old = {**event, "id": "ev-2", "time": rfc3339(clock.now() - timedelta(days=36))}
    err = _error(admin.usage.send, [event, old], org_id=org)
    assert (err.status, err.param) == (422, "events[1].time")


def test_invoice_preview_prices_compute_facts_and_skips_failed_time(
    fleet: Client,
    acme: Client,
    worker: Worker,
    db: Database,
    clock: VirtualClock,
) -> None:
    org = _org_id(acme)
    period = clock.now().strftime("%Y-%m")
    inst = acme.instances.create("8xH100")
    worker.run_once()
    clock.advance(11_862)
    node_id = acme.instances.get(inst["id"])["node_id"]
    fleet_service.report_health(
        db=db, clock=clock, node_id=node_id, checks=[CheckResult("gpu", CheckStatus.FAIL, "Xid")]
    )
    clock.advance(600)  # compute notices 10 minutes later: those are not billed
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "failed"
    clock.advance(3600)

    preview = acme.invoices.preview(org, period)
    assert (preview["object"], preview["period"]) == ("invoice_preview", period)
    (line,) = preview["lines"]
    assert line["sku"] == f"{H100}.on_demand"
    assert Decimal(line["gpu_seconds"]) == 8 * 11_862
    assert line["unit_price"] == {"amount": "2.99", "currency": "USD"}  # catalog default
    assert line["amount"] == {"amount": "78.82", "currency": "USD"}
    assert preview["total"] == line["amount"]
    assert [f[:4] for f in line["fact_ids"]] == ["alc_"]
    assert acme.invoices.preview(org, period) == preview  # rating again: identical

    _, other = tenant_client(fleet, "globex")
    refused = _error(other.invoices.preview, org, period)  # as if it did not exist
    assert (refused.status, refused.code) == (404, "org_not_found")
    assert fleet.invoices.preview(org, period)["total"] == preview["total"]
    assert _error(acme.invoices.preview, org, "2026-13").param == "period"

    csv = acme.invoices.preview_csv(org, period)
    header, row = csv.strip().splitlines()
    assert header.startswith("sku,project_id,gpu_seconds")
    assert row.startswith(f"{H100}.on_demand,")
    assert ",78.82,USD," in row


def test_invoices_build_finalize_and_export(
    fleet: Client, acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    org = _org_id(acme)
    inst = acme.instances.create("8xH100")
    worker.run_once()
    clock.advance(3600)
    acme.instances.terminate(inst["id"])
    worker.run_once()
    draft = fleet.invoices.build(org, "2026-03")
    assert (draft["object"], draft["state"], draft["total"]["amount"]) == (
        "invoice",
        "draft",
        "23.92",
    )
    assert draft["id"].startswith("inv_")
    assert _error(acme.invoices.build, org, "2026-03").status == 403
    assert _error(fleet.invoices.finalize, draft["id"]).code == "period_not_closed"
    clock.advance(timedelta(days=40))
    final = fleet.invoices.finalize(draft["id"])
    assert final["state"] == "finalized"
    assert fleet.invoices.finalize(draft["id"]) == final
    assert acme.invoices.get(draft["id"]) == final
    assert [i["id"] for i in acme.invoices.list(org)["data"]] == [draft["id"]]
    (line,) = final["lines"]
    assert (line["kind"], line["usage_period"], line["amount"]["amount"]) == (
        "usage",
        "2026-03",
        "23.92",
    )
    header, row = acme.invoices.csv(draft["id"]).strip().splitlines()
    assert header.startswith("invoice_id,period,kind")
    assert row.startswith(f"{draft['id']},2026-03,usage,2026-03,H100-SXM-80GB.on_demand,")
    _, other = tenant_client(fleet, "globex")
    assert _error(other.invoices.get, draft["id"]).status == 404


def test_token_usage_is_priced_on_the_preview(
    admin: Client, acme: Client, clock: VirtualClock
) -> None:
    org = _org_id(acme)
    prices = {"llama": {"input_per_1m": "0.20", "output_per_1m": "0.60"}}
    admin.price_books.publish("2026-04-01T00:00:00Z", token_prices=prices)
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    event = {"source": "studio", "type": "tokens", "subject": "llama", "time": rfc3339(clock.now())}
    batch = [
        {**event, "id": "r1", "data": {"input_tokens": 1_000_000, "output_tokens": 500_000}},
        {**event, "id": "r2", "data": {"input_tokens": 1_000_000, "batch": True}},
        {**event, "id": "r3", "subject": "unpriced", "data": {"input_tokens": 5}},
    ]
    assert admin.usage.send(batch, org_id=org)["accepted"] == 3
    assert admin.usage.send(batch, org_id=org)["duplicates"] == 3
    bad = {**event, "id": "r4", "data": {"input_tokens": -1}}
    assert _error(admin.usage.send, [bad], org_id=org).param == "events[0].data"
    preview = acme.invoices.preview(org, "2026-04")
    assert [(t["model"], t["batch"], t["amount"]["amount"]) for t in preview["token_lines"]] == [
        ("llama", False, "0.50"),
        ("llama", True, "0.10"),
    ]
    assert preview["total"]["amount"] == "0.60"
    assert [t["sku"] for t in preview["token_lines"]] == ["llama.tokens", "llama.tokens.batch"]
    preview_rows = list(csv.DictReader(io.StringIO(acme.invoices.preview_csv(org, "2026-04"))))
    # The preview's CSV names token lines as the stored invoice will (it said tokens.llama).
    clock.set(datetime(2026, 5, 2, tzinfo=UTC))
    draft = admin.invoices.build(org, "2026-04")
    stored_rows = list(csv.DictReader(io.StringIO(acme.invoices.csv(draft["id"]))))
    columns = ("sku", "amount", "input_tokens", "output_tokens")
    assert [tuple(r[c] for c in columns) for r in preview_rows] == [
        ("llama.tokens", "0.50", "1000000", "500000"),
        ("llama.tokens.batch", "0.10", "1000000", "0"),
    ]
    assert [tuple(r[c] for c in columns) for r in stored_rows] == [
        tuple(r[c] for c in columns) for r in preview_rows
    ]
