"""From ingested facts to stored invoices (both backends): a price change inside the month
splits GPU time and token usage by the version in force; token usage is stored on the invoice
and a late token event becomes an adjustment on the next one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from neocloud.billing import invoices, service
from neocloud.billing.rating import Period
from neocloud.billing.usage import TOKENS, UsageEvent, record_usage_events
from neocloud.client import Client
from neocloud.compute.tables import AllocationRow
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
H100 = "H100-SXM-80GB"
MARCH, APRIL = Period.month("2026-03"), Period.month("2026-04")
CHANGE = datetime(2026, 3, 16, tzinfo=UTC)
ORG = "org_tokens"


def _publish(
    db: Database, clock: VirtualClock, at: datetime, gpu: str, tin: str, tout: str
) -> None:
    service.publish_price_book(
        db=db,
        clock=clock,
        principal=OPERATOR,
        effective_from=at,
        gpu_prices={f"{H100}.on_demand": Decimal(gpu)},
        token_prices={"llama": {"input_per_1m": Decimal(tin), "output_per_1m": Decimal(tout)}},
    )


def _allocate(db: Database, start: datetime, end: datetime, gpus: int = 8) -> None:
    with db.transaction() as s:
        node = s.scalars(sa.select(NodeRow.id).where(NodeRow.gpu_model == H100)).first()
        assert node is not None
        s.add(
            AllocationRow(
                id="alc_march",
                org_id=ORG,
                project_id="prj_1",
                node_id=node,
                gpu_model=H100,
                gpu_count=gpus,
                gpu_indices=list(range(gpus)),
                vcpus=16,
                ram_gib=128,
                cls="on_demand",
                start_at=start,
                end_at=end,
                created_at=start,
            )
        )


def _tokens(db: Database, clock: VirtualClock, eid: str, at: datetime, tin: int, tout: int) -> None:
    data = {"model": "llama", "input_tokens": tin, "output_tokens": tout, "batch": False}
    event = UsageEvent(eid, "studio", TOKENS, "prj_1", at, data)
    result = record_usage_events(db=db, clock=clock, org_id=ORG, events=[event])
    assert result.accepted == 1


def test_price_change_and_tokens_on_stored_invoices(
    fleet: Client, db: Database, clock: VirtualClock
) -> None:
    _publish(db, clock, clock.now(), "2.95", "0.20", "0.60")
    _publish(db, clock, CHANGE, "2.50", "0.10", "0.40")
    _allocate(db, datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC))
    clock.set(datetime(2026, 3, 25, tzinfo=UTC))
    _tokens(db, clock, "t1", CHANGE - timedelta(hours=1), 1_000_000, 1_000_000)
    _tokens(db, clock, "t2", CHANGE + timedelta(hours=1), 1_000_000, 1_000_000)

    preview, _ = invoices.preview_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=MARCH
    )
    assert [(ln.unit_price, ln.gpu_seconds, ln.amount.amount) for ln in preview.lines] == [
        (Decimal("2.95"), Decimal(6 * 24 * 3600 * 8), Decimal("3398.40")),
        (Decimal("2.50"), Decimal(4 * 24 * 3600 * 8), Decimal("1920.00")),
    ]
    assert [(t.input_tokens, t.amount.amount) for t in preview.token_lines] == [
        (1_000_000, Decimal("0.80")),
        (1_000_000, Decimal("0.50")),
    ]

    clock.set(datetime(2026, 4, 5, tzinfo=UTC))
    inv_id = invoices.build_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=MARCH
    )
    invoices.finalize_invoice(db=db, clock=clock, principal=OPERATOR, invoice_id=inv_id)
    march = invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=inv_id)
    assert march.invoice.state == "finalized"
    stored = [(ln.kind, ln.sku, ln.unit_price, ln.amount) for ln in march.lines]
    assert stored == [
        ("usage", f"{H100}.on_demand", Decimal("2.95"), Decimal("3398.40")),
        ("usage", f"{H100}.on_demand", Decimal("2.50"), Decimal("1920.00")),
        ("usage", "llama.tokens", Decimal(0), Decimal("0.80")),
        ("usage", "llama.tokens", Decimal(0), Decimal("0.50")),
    ]
    assert march.invoice.total == Decimal("5319.70")
    token_facts = {f for ln in march.lines if ln.sku == "llama.tokens" for f in ln.fact_ids}
    assert len(token_facts) == 2  # each references the usage event it prices
    # Over HTTP, as JSON and CSV.
    wire = fleet.invoices.get(inv_id)  # type: ignore[attr-defined]
    assert [ln["sku"] for ln in wire["lines"]].count("llama.tokens") == 2
    assert wire["total"]["amount"] == "5319.70"
    csv_text = fleet.invoices.csv(inv_id)  # type: ignore[attr-defined]
    assert sum(1 for row in csv_text.splitlines() if ",llama.tokens," in row) == 2

    # A late token event of March (2M input tokens at the new price, $0.20): March stays as
    # it was; April's draft carries the difference.
    clock.set(datetime(2026, 4, 6, tzinfo=UTC))
    _tokens(db, clock, "t3", datetime(2026, 3, 31, 23, tzinfo=UTC), 2_000_000, 0)
    april_id = invoices.build_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=APRIL
    )
    april = invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=april_id)
    adjustments = [
        (ln.usage_period, ln.sku, ln.amount, len(ln.fact_ids))
        for ln in april.lines
        if ln.kind == "adjustment"
    ]
    assert adjustments == [("2026-03", "llama.tokens", Decimal("0.20"), 1)]
    assert invoices.get_invoice(
        db=db, principal=OPERATOR, invoice_id=inv_id
    ).invoice.total == Decimal("5319.70")
    # Rebuilding April again bills nothing twice.
    invoices.build_invoice(db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=APRIL)
    again = invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=april_id)
    assert again.invoice.total == april.invoice.total == Decimal("0.20")
