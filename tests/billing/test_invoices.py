"""Invoices: draft → finalized (frozen, idempotent), late facts as adjustments next month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from neocloud.billing import invoices
from neocloud.billing.rating import Period
from neocloud.client import Client
from neocloud.compute.tables import AllocationRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import Conflict, NotFound, PermissionDenied

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
MARCH, APRIL, MAY = Period.month("2026-03"), Period.month("2026-04"), Period.month("2026-05")


def _build(db: Database, clock: VirtualClock, org: str, period: Period) -> invoices.InvoiceView:
    inv_id = invoices.build_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=org, period=period
    )
    return invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=inv_id)


def _finalize(db: Database, clock: VirtualClock, inv_id: str) -> invoices.InvoiceView:
    invoices.finalize_invoice(db=db, clock=clock, principal=OPERATOR, invoice_id=inv_id)
    return invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=inv_id)


def _late_fact(db: Database, org: str, node_id: str, start: datetime, now: datetime) -> str:
    with db.transaction() as s:
        s.add(
            AllocationRow(
                id="alc_late",
                org_id=org,
                node_id=node_id,
                gpu_model="H100-SXM-80GB",
                gpu_count=1,
                gpu_indices=[7],
                vcpus=16,
                ram_gib=128,
                cls="on_demand",
                start_at=start,
                end_at=start + timedelta(hours=1),
                created_at=now,
            )
        )
    return "alc_late"


def test_draft_finalize_and_late_facts_become_adjustments(
    acme: Client, worker: Worker, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node_id = acme.instances.get(inst["id"])["node_id"]
    clock.advance(3600)
    acme.instances.terminate(inst["id"])
    worker.run_once()

    march = _build(db, clock, org, MARCH)
    assert (march.invoice.state, march.invoice.total) == ("draft", Decimal("23.92"))
    assert [(ln.kind, ln.sku, ln.gpu_seconds) for ln in march.lines] == [
        ("usage", "H100-SXM-80GB.on_demand", Decimal(8 * 3600))
    ]
    with pytest.raises(Conflict, match="grace"):
        _finalize(db, clock, march.invoice.id)

    clock.set(datetime(2026, 4, 4, tzinfo=UTC))
    final = _finalize(db, clock, march.invoice.id)
    assert (final.invoice.state, final.invoice.total) == ("finalized", Decimal("23.92"))
    again = _finalize(db, clock, march.invoice.id)  # idempotent, unchanged
    assert (again.invoice.finalized_at, again.invoice.total) == (
        final.invoice.finalized_at,
        Decimal("23.92"),
    )

    # a fact for March arrives after March was finalized
    late = _late_fact(db, org, node_id, datetime(2026, 3, 10, tzinfo=UTC), clock.now())
    assert _build(db, clock, org, MARCH).invoice.total == Decimal("23.92")  # frozen
    april = _build(db, clock, org, APRIL)
    assert [(ln.kind, ln.usage_period, ln.amount, ln.fact_ids) for ln in april.lines] == [
        ("adjustment", "2026-03", Decimal("2.99"), [late])
    ]
    assert april.invoice.total == Decimal("2.99")
    april_again = _build(db, clock, org, APRIL)  # rebuilding a draft does not add it twice
    assert april_again.invoice.total == Decimal("2.99")

    clock.set(datetime(2026, 5, 4, tzinfo=UTC))
    _finalize(db, clock, april.invoice.id)
    may = _build(db, clock, org, MAY)
    assert may.lines == []  # the late fact was billed once, on April's invoice


def test_invoices_are_operator_built_and_tenant_scoped(
    acme: Client, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    tenant = Principal("key_t", "usr_t", org, Role.OWNER, is_operator=False)
    stranger = Principal("key_s", "usr_s", "org_other", Role.OWNER, is_operator=False)
    with pytest.raises(PermissionDenied):
        invoices.build_invoice(db=db, clock=clock, principal=tenant, org_id=org, period=MARCH)
    inv = _build(db, clock, org, MARCH).invoice
    assert invoices.get_invoice(db=db, principal=tenant, invoice_id=inv.id).invoice.id == inv.id
    with pytest.raises(NotFound):
        invoices.get_invoice(db=db, principal=stranger, invoice_id=inv.id)
    page = invoices.list_invoices(db=db, principal=tenant, org_id=org)
    assert [r.id for r in page.items] == [inv.id]
