"""Issue 13, finding 6: one tenant's bad data never stops anyone's billing (both backends).

A usage event stored around the API's checks (written straight into the database) with
``input_tokens`` of 10^35 used to overflow a ``quantize``: that org's preview, the operator's
reports and the monthly close answered 500, and the close stopped, so the orgs after it got no
invoice. Now the figure is a 409 ``amount_out_of_range`` naming the org; the close and the
invoicing worker skip the org, report it and invoice the others; the reports leave it out and
name it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from neocloud.billing import invoices, reports, service
from neocloud.billing.rating import Period
from neocloud.billing.tables import ContractRow, UsageEventRow
from neocloud.billing.usage import TOKENS, UsageEvent, record_usage_events
from neocloud.billing.worker import InvoicingWorker
from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import Conflict
from neocloud.kernel.money import MAX_AMOUNT, AmountOutOfRange, Money, quantize_amount

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
MARCH = Period.month("2026-03")
GOOD = ("org_a", "org_c")  # invoiced either side of the bad org, in org order
BAD = "org_b"


def _prices(db: Database, clock: VirtualClock) -> None:
    service.publish_price_book(
        db=db,
        clock=clock,
        principal=OPERATOR,
        effective_from=clock.now(),
        gpu_prices={},
        token_prices={
            "llama": {"input_per_1m": Decimal("0.20"), "output_per_1m": Decimal("0.60")},
            "big": {"input_per_1m": Decimal("100"), "output_per_1m": Decimal("100")},
        },
    )


def _bad_row(db: Database, at: datetime, org_id: str = BAD, **data: object) -> None:
    """A usage event written straight into the table, as no API call can any more."""
    with db.transaction() as s:
        s.add(
            UsageEventRow(
                id=f"use_{org_id}",
                org_id=org_id,
                source="studio",
                event_id=f"bad-{org_id}",
                type=TOKENS,
                subject="prj",
                time=at,
                data={"model": "llama"} | data,
                received_at=at,
            )
        )


@pytest.fixture
def march(db: Database, clock: VirtualClock) -> Database:
    """org_a and org_c used $0.50 of tokens each in March; org_b holds 10^35 input tokens."""
    _prices(db, clock)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    clock.set(at)
    for org in GOOD:
        event = UsageEvent(
            f"ok-{org}", "studio", TOKENS, "prj", at, {"model": "llama", "input_tokens": 2_500_000}
        )
        assert record_usage_events(db=db, clock=clock, org_id=org, events=[event]).accepted == 1
    _bad_row(db, at, input_tokens=10**35)
    return db


def test_money_out_of_range_is_a_domain_error() -> None:
    with pytest.raises(AmountOutOfRange) as info:
        Money(Decimal("2e28")).rounded()
    assert (info.value.status, info.value.code) == (409, "amount_out_of_range")
    assert isinstance(info.value, ValueError)  # a request body with it fails validation: 422
    with pytest.raises(AmountOutOfRange):
        Money(MAX_AMOUNT)
    assert Money(MAX_AMOUNT - Decimal("0.01")).rounded().amount == MAX_AMOUNT - Decimal("0.01")
    with pytest.raises(AmountOutOfRange):  # below the bound but past the decimal precision
        quantize_amount(Decimal("99999999999999"), Decimal("1e-20"))


def test_the_preview_of_the_bad_org_is_a_precise_409(march: Database, clock: VirtualClock) -> None:
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    with pytest.raises(Conflict) as info:
        invoices.preview_invoice(
            db=march, clock=clock, principal=OPERATOR, org_id=BAD, period=MARCH
        )
    assert (info.value.code, info.value.details["org_id"]) == ("usage_out_of_range", BAD)
    assert info.value.details["event_id"] == f"bad-{BAD}"
    preview, _ = invoices.preview_invoice(
        db=march, clock=clock, principal=OPERATOR, org_id="org_a", period=MARCH
    )
    assert [t.amount.amount for t in preview.token_lines] == [Decimal("0.50")]


def test_a_token_line_too_large_to_bill_is_amount_out_of_range(
    db: Database, clock: VirtualClock
) -> None:
    """Counts a BIGINT holds, at $100 per 1M: $1.8 x 10^15, past what an amount may be."""
    _prices(db, clock)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    _bad_row(db, at, model="big", input_tokens=9 * 10**18, output_tokens=9 * 10**18)
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    with pytest.raises(AmountOutOfRange) as info:
        invoices.preview_invoice(db=db, clock=clock, principal=OPERATOR, org_id=BAD, period=MARCH)
    assert (info.value.status, info.value.details["org_id"]) == (409, BAD)
    result = invoices.close_period(db=db, clock=clock, principal=OPERATOR, period=MARCH)
    assert [(f.org_id, f.code) for f in result.failed] == [(BAD, "amount_out_of_range")]


def test_the_close_skips_and_reports_the_bad_org_and_invoices_the_others(
    march: Database, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.set(datetime(2026, 4, 10, tzinfo=UTC))  # March and its grace period are over
    with caplog.at_level(logging.ERROR, logger="neocloud.billing"):
        result = invoices.close_period(db=march, clock=clock, principal=OPERATOR, period=MARCH)
    assert [(f.org_id, f.code) for f in result.failed] == [(BAD, "usage_out_of_range")]
    assert len(result.finalized) == 2
    owners = {
        invoices.get_invoice(db=march, principal=OPERATOR, invoice_id=i).invoice.org_id: i
        for i in result.finalized
    }
    assert set(owners) == set(GOOD)
    for invoice_id in result.finalized:
        view = invoices.get_invoice(db=march, principal=OPERATOR, invoice_id=invoice_id)
        assert view.invoice.total == Decimal("0.50")
    assert any(
        BAD in r.getMessage() and "usage_out_of_range" in r.getMessage() for r in caplog.records
    )
    # the failed org left nothing half-written: no invoice of its own
    listed = invoices.list_invoices(db=march, principal=OPERATOR, org_id=BAD, limit=10, after=None)
    assert list(listed.items) == []


def test_the_invoicing_worker_invoices_the_orgs_after_the_bad_one(
    march: Database, clock: VirtualClock
) -> None:
    clock.set(datetime(2026, 4, 10, tzinfo=UTC))
    result = InvoicingWorker(march, clock, holder="test").run_once()
    assert result is not None
    assert [f.org_id for f in result.failed] == [BAD]
    assert len(result.finalized) == 2


def test_a_stored_token_count_that_is_not_a_count_is_reported_not_fatal(
    db: Database, clock: VirtualClock
) -> None:
    _prices(db, clock)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    _bad_row(db, at, org_id="org_x", input_tokens="many")
    _bad_row(db, at, org_id="org_y", output_tokens=-5)
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    result = invoices.close_period(db=db, clock=clock, principal=OPERATOR, period=MARCH)
    assert [(f.org_id, f.code) for f in result.failed] == [
        ("org_x", "usage_out_of_range"),
        ("org_y", "usage_out_of_range"),
    ]
    with pytest.raises(Conflict) as info:
        invoices.preview_invoice(
            db=db, clock=clock, principal=OPERATOR, org_id="org_x", period=MARCH
        )
    assert info.value.details["event_id"] == "bad-org_x"


def test_reports_leave_the_bad_org_out_and_name_it(march: Database, clock: VirtualClock) -> None:
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    revenue = reports.revenue_report(
        db=march, clock=clock, principal=OPERATOR, start="2026-03", end="2026-03"
    )
    assert revenue.by("org_id") == {"org_a": Decimal("0.50"), "org_c": Decimal("0.50")}
    assert [(k.org_id, k.code) for k in revenue.skipped] == [(BAD, "usage_out_of_range")]
    conc = reports.concentration_report(db=march, clock=clock, principal=OPERATOR, window_days=30)
    assert set(conc.revenue) == set(GOOD)
    assert conc.top1 == Decimal("0.500000")
    assert [k.org_id for k in conc.skipped] == [BAD]


def test_backlog_leaves_out_an_org_whose_stored_contract_is_out_of_range(
    db: Database, clock: VirtualClock
) -> None:
    """On SQLite such a row can be stored (a bad migration, a hand edit); PostgreSQL's
    NUMERIC(20, 6) refuses it at the insert, which is checked instead."""
    now = datetime(2026, 3, 10, tzinfo=UTC)
    clock.set(now)
    for org, amount in (("org_a", Decimal("1000")), (BAD, Decimal("1e30"))):
        row = ContractRow(
            id=f"ctr_{org}",
            org_id=org,
            kind="prepaid",
            start_at=now - timedelta(days=1),
            end_at=now + timedelta(days=60),
            amount=amount,
            currency="USD",
            created_by="usr_op",
            created_at=now,
        )
        if db.dialect == "postgresql" and org == BAD:
            with pytest.raises(sa.exc.DataError), db.transaction() as s:
                s.add(row)
            continue
        with db.transaction() as s:
            s.add(row)
    backlog = reports.backlog_report(db=db, clock=clock, principal=OPERATOR)
    assert backlog.by_org == {"org_a": Decimal("1000.00")}
    stored = db.dialect != "postgresql"  # only where the bad row could be stored at all
    expected = [(BAD, "amount_out_of_range")] if stored else []
    assert [(k.org_id, k.code) for k in backlog.skipped] == expected


def test_over_http_the_bad_org_is_409_and_the_close_answers_with_it(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    _prices(db, clock)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    _bad_row(db, at, input_tokens=10**35)
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    with pytest.raises(ApiError) as info:
        admin.invoices.preview(BAD, "2026-03")
    assert (info.value.status, info.value.code) == (409, "usage_out_of_range")
    run = admin.invoices.close("2026-03")
    assert run["failed"] == [
        {"org_id": BAD, "code": "usage_out_of_range", "message": run["failed"][0]["message"]}
    ]
    assert BAD in run["failed"][0]["message"]
    revenue = admin.billing_reports.revenue("2026-03", "2026-03")
    assert [k["org_id"] for k in revenue["skipped"]] == [BAD]
    assert admin.billing_reports.concentration(window_days=30)["skipped"][0]["org_id"] == BAD
