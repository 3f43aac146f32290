"""Agreements on stored invoices: reservation charges, prepaid drawdown, credits, credit notes,
and the monthly invoicing run (idempotent, safe across a crash between orgs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from neocloud.billing import (
    agreement_lines,
    contract_service,
    credits,
    invoices,
    ledger,
    reports,
    service,
)
from neocloud.billing.contract_service import ContractTerms
from neocloud.billing.rating import Period
from neocloud.billing.tables import ContractRow, CreditNoteRow, InvoiceLineRow, InvoiceRow
from neocloud.billing.worker import InvoicingWorker
from neocloud.client import Client
from neocloud.compute.tables import AllocationRow, ReservationRow
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeEventRow, NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import load_settings

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
APRIL, MAY = Period.month("2026-04"), Period.month("2026-05")
ON_DEMAND, R1M, R1Y = Decimal("2.95"), Decimal("2.50"), Decimal("2.10")


def _t(month: int, day: int = 1, hour: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


@pytest.fixture
def node(fleet: Client, db: Database, clock: VirtualClock) -> NodeRow:
    """One 8-GPU node of the fleet, and a price book from now on with round prices."""
    with db.transaction() as s:
        row = s.scalars(sa.select(NodeRow).order_by(NodeRow.id)).first()
        assert row is not None
        s.expunge(row)
    m = row.gpu_model
    service.publish_price_book(
        db=db,
        clock=clock,
        principal=OPERATOR,
        effective_from=clock.now(),
        gpu_prices={
            f"{m}.on_demand": ON_DEMAND,
            f"{m}.reserved.1m": R1M,
            f"{m}.reserved.1y": R1Y,
        },
        token_prices={},
    )
    return row


_seq = iter(range(10**6))


def _alloc(
    db: Database,
    org: str,
    node: NodeRow,
    start: datetime,
    hours: int,
    *,
    cls: str = "on_demand",
    reservation_id: str | None = None,
) -> str:
    aid = f"alc_t{next(_seq)}"
    with db.transaction() as s:
        s.add(
            AllocationRow(
                id=aid,
                org_id=org,
                node_id=node.id,
                reservation_id=reservation_id,
                gpu_model=node.gpu_model,
                gpu_count=8,
                gpu_indices=list(range(8)),
                vcpus=16,
                ram_gib=128,
                cls=cls,
                start_at=start,
                end_at=start + timedelta(hours=hours),
                created_at=start,
            )
        )
    return aid


def _reservation(
    db: Database,
    clock: VirtualClock,
    org: str,
    node: NodeRow,
    rsv_id: str,
    start: datetime,
    end: datetime,
    state: str,
) -> None:
    """A one-node reservation row, as compute would have stored it."""
    now = clock.now()
    with db.transaction() as s:
        s.add(
            ReservationRow(
                id=rsv_id,
                org_id=org,
                gpu_model=node.gpu_model,
                node_count=1,
                node_ids=[node.id],
                start_at=start,
                end_at=end,
                price_amount=Decimal(0),
                price_currency="USD",
                state=state,
                created_by="test",
                created_at=now,
                updated_at=now,
            )
        )


def _contract(db: Database, clock: VirtualClock, **fields: Any) -> ContractRow:
    """A contract recorded by the operator admin (``fields``: ``ContractTerms``')."""
    terms = ContractTerms(**fields)
    return contract_service.create_contract(db=db, clock=clock, principal=OPERATOR, terms=terms)


def _build(db: Database, clock: VirtualClock, org: str, period: Period) -> invoices.InvoiceView:
    inv_id = invoices.build_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=org, period=period
    )
    return invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=inv_id)


def _finalize(db: Database, clock: VirtualClock, inv_id: str) -> invoices.InvoiceView:
    invoices.finalize_invoice(db=db, clock=clock, principal=OPERATOR, invoice_id=inv_id)
    return invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=inv_id)


def _lines(view: invoices.InvoiceView) -> list[tuple[str, Decimal]]:
    return [(ln.kind, ln.amount) for ln in view.lines]


def _cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"))


def test_monthly_reservation_charge_covers_its_usage(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    _reservation(db, clock, org, node, "rsv_t1", _t(4), _t(4, year=2027), "scheduled")
    ctr = _contract(db, clock, org_id=org, kind="reservation", reservation_id="rsv_t1")
    assert (ctr.term, ctr.billing, ctr.gpus, ctr.end_at) == ("1y", "monthly", 8, _t(4, year=2027))
    used = _alloc(db, org, node, _t(4, 10), 10, cls="reserved", reservation_id="rsv_t1")
    clock.set(_t(5, 2))
    april = _build(db, clock, org, APRIL)
    usage = _cents(8 * 10 * R1M)  # the reserved GPU time as usage lines price it
    assert _lines(april) == [
        ("usage", usage),
        ("reservation", _cents(8 * 720 * R1Y)),  # 8 GPUs x 30 days x the 1y term price
        ("reserved_usage", -usage),
    ]
    charge, covered = april.lines[1], april.lines[2]
    assert (charge.reference_id, charge.fact_ids) == (ctr.id, ["rsv_t1"])
    assert (covered.reference_id, covered.fact_ids) == (ctr.id, [used])
    assert april.invoice.total == _cents(8 * 720 * R1Y)
    clock.set(_t(6, 2))
    assert _lines(_build(db, clock, org, MAY)) == [("reservation", _cents(8 * 744 * R1Y))]
    with db.transaction() as s:
        # the rest of the term from May 1: 8 GPUs x (365 days - 30) x 24 h x the 1y price
        left = reports.backlog_by_org(s, _t(5))
    assert left == {org: _cents(8 * (365 - 30) * 24 * R1Y)}


def test_a_reservation_extended_past_its_contract_bills_the_extension_as_usage(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    """The contract covers April 1-20; compute extended the reservation to the 25th. The
    charge pays for the contract's dates and takes their usage back off; the five extra days
    stay billed as reserved usage (they were free: the credit took off every hour of the
    reservation's usage, inside its contract or not)."""
    org = acme.get("orgs")["data"][0]["id"]
    _reservation(
        db, clock, org, node, "rsv_ext", _t(4), _t(4, 25), "active"
    )  # as extended by compute after the contract was made
    ctr = _contract(
        db, clock, org_id=org, kind="reservation", reservation_id="rsv_ext", end_at=_t(4, 20)
    )
    assert (ctr.term, ctr.end_at) == ("1m", _t(4, 20))
    _alloc(db, org, node, _t(4, 15), 10 * 24, cls="reserved", reservation_id="rsv_ext")
    clock.set(_t(5, 2))
    april = _build(db, clock, org, APRIL)
    inside, extension = 8 * 5 * 24 * R1M, 8 * 5 * 24 * R1M  # Apr 15-20 and Apr 20-25
    assert _lines(april) == [
        ("usage", _cents(inside + extension)),
        ("reservation", _cents(8 * 19 * 24 * R1M)),  # the contract's 19 days
        ("reserved_usage", -_cents(inside)),
    ]
    assert april.invoice.total == _cents(8 * 19 * 24 * R1M + extension)


def test_a_reservation_cancelled_before_it_starts_is_not_charged(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    now = clock.now()
    _reservation(db, clock, org, node, "rsv_t2", _t(4), _t(5), "scheduled")
    ctr = _contract(
        db, clock, org_id=org, kind="reservation", reservation_id="rsv_t2", billing="upfront"
    )
    assert ctr.term == "1m"
    with db.transaction() as s:
        assert reports.backlog_by_org(s, now) == {org: _cents(8 * 720 * R1M)}
        rsv = s.get(ReservationRow, "rsv_t2")
        assert rsv is not None
        rsv.state = "cancelled"
    with db.transaction() as s:
        assert reports.backlog_by_org(s, now) == {}
    clock.set(_t(5, 2))
    assert _build(db, clock, org, APRIL).lines == []


def test_prepaid_drawdown_and_credits_by_priority_then_expiry(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    prepaid = _contract(
        db,
        clock,
        org_id=org,
        kind="prepaid",
        start_at=_t(4),
        end_at=_t(4, year=2027),
        amount=Decimal(200),
    )

    def grant(amount: int, priority: int, expires: datetime | None, paid: bool) -> str:
        return credits.grant_credit(
            db=db,
            clock=clock,
            principal=OPERATOR,
            org_id=org,
            amount=Decimal(amount),
            priority=priority,
            expires_at=expires,
            paid=paid,
        ).id

    promo = grant(50, 0, _t(7), paid=False)
    paid = grant(500, 1, None, paid=True)
    soon = grant(1000, 1, _t(5, 15), paid=False)  # same priority, earlier expiry: first
    _alloc(db, org, node, _t(4, 3), 10)
    _alloc(db, org, node, _t(5, 3), 5)

    clock.set(_t(5, 2))
    april = _build(db, clock, org, APRIL)
    usage = _cents(8 * 10 * ON_DEMAND)  # 236.00, paid from the prepayment up to 200.00
    assert _lines(april) == [
        ("usage", usage),
        ("prepaid", Decimal(200)),
        ("drawdown", Decimal(-200)),
        ("credit", -(usage - 200)),
    ]
    assert [ln.reference_id for ln in april.lines[1:]] == [prepaid.id, prepaid.id, promo]
    clock.set(_t(5, 4))
    assert _finalize(db, clock, april.invoice.id).invoice.total == Decimal(200)

    clock.set(_t(6, 2))
    may = _build(db, clock, org, MAY)
    may_usage = _cents(8 * 5 * ON_DEMAND)  # 118.00: the prepayment is used up
    promo_left = 50 - (usage - 200)
    assert _lines(may) == [
        ("usage", may_usage),
        ("credit", -promo_left),
        ("credit", -(may_usage - promo_left)),
    ]
    # the grant expiring mid-May cannot pay May's invoice: the paid one does
    assert [ln.reference_id for ln in may.lines[1:]] == [promo, paid]
    assert soon not in [ln.reference_id for ln in may.lines]
    assert may.invoice.total == 0
    views, _ = credits.list_credits(db=db, principal=OPERATOR, org_id=org, limit=10, after=None)
    # drafts do not use up credit: only April's (finalized) credit line counts so far
    assert {v.grant.id: v.balance for v in views} == {
        promo: promo_left,
        paid: Decimal(500),
        soon: Decimal(1000),
    }


def test_late_fact_lowering_a_finalized_month_is_a_credit_note(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    promo = credits.grant_credit(
        db=db, clock=clock, principal=OPERATOR, org_id=org, amount=Decimal(20)
    )
    _alloc(db, org, node, _t(4, 10), 10)
    clock.set(_t(5, 4))
    april = _finalize(db, clock, _build(db, clock, org, APRIL).invoice.id)
    assert _lines(april) == [("usage", _cents(80 * ON_DEMAND)), ("credit", Decimal(-20))]
    # compute learns late that the node was failed for two of those hours
    with db.transaction() as s:
        for i, (at, state) in enumerate([(_t(4, 10, 2), "failed"), (_t(4, 10, 4), "healthy")]):
            s.add(NodeEventRow(id=f"evt_t{i}", node_id=node.id, at=at, to_state=state, actor="t"))
    clock.set(_t(6, 2))
    may = _build(db, clock, org, MAY)
    assert may.lines == []  # not a negative line on May's invoice...
    notes = invoices.list_credit_notes(db=db, principal=OPERATOR, org_id=org)
    assert len(notes.items) == 1  # ...but a credit note on April's
    note = notes.items[0]
    lowered = _cents(16 * ON_DEMAND)  # 47.20: the promotional 20.00 goes back to its grant,
    assert (note.invoice_id, note.usage_period, note.total) == (  # only 27.20 back in money
        april.invoice.id,
        "2026-04",
        -(lowered - 20),
    )
    assert Decimal(note.lines[0]["gpu_seconds"]) == -16 * 3600
    assert [(ln["kind"], ln["reference_id"], Decimal(ln["amount"])) for ln in note.lines[1:]] == [
        ("restored", promo.id, Decimal(20))
    ]
    views, _ = credits.list_credits(db=db, principal=OPERATOR, org_id=org, limit=5, after=None)
    assert [v.balance for v in views] == [Decimal(20)]
    frozen = invoices.get_invoice(db=db, principal=OPERATOR, invoice_id=april.invoice.id)
    assert _lines(frozen) == _lines(april)
    _build(db, clock, org, MAY)  # rebuilding issues nothing twice
    again = invoices.list_credit_notes(db=db, principal=OPERATOR, org_id=org)
    assert [n.id for n in again.items] == [note.id]


def _snapshot(db: Database) -> list[tuple[str, str, str, Decimal, int]]:
    with db.transaction() as s:
        rows = s.execute(
            sa.select(
                InvoiceRow.org_id,
                InvoiceRow.period,
                InvoiceRow.state,
                InvoiceRow.total,
                sa.func.count(InvoiceLineRow.id),
            )
            .outerjoin(InvoiceLineRow, InvoiceLineRow.invoice_id == InvoiceRow.id)
            .group_by(InvoiceRow.id)
            .order_by(InvoiceRow.org_id)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_monthly_run_is_idempotent_and_survives_a_crash_between_orgs(
    fleet: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    orgs = ["org_t_a", "org_t_b", "org_t_c"]
    for i, org in enumerate(orgs):
        _alloc(db, org, node, _t(4, 2 + i), 1 + i)
    clock.set(_t(5, 2))  # inside the grace period: drafts only
    first = invoices.close_previous_month(db=db, clock=clock, principal=OPERATOR)
    assert (first.period, len(first.drafts), first.finalized) == ("2026-04", 3, ())

    clock.set(_t(5, 4))

    class Crash(Exception):
        pass

    def crash_after_first(org: str) -> None:
        if org == orgs[0]:
            raise Crash

    with pytest.raises(Crash):
        invoices.close_period(
            db=db, clock=clock, principal=OPERATOR, period=APRIL, after_org=crash_after_first
        )
    states = [(org, state) for org, _, state, _, _ in _snapshot(db)]
    assert states == [(orgs[0], "finalized"), (orgs[1], "draft"), (orgs[2], "draft")]

    again = invoices.close_period(db=db, clock=clock, principal=OPERATOR, period=APRIL)
    assert (len(again.unchanged), len(again.finalized), again.drafts) == (1, 2, ())
    done = _snapshot(db)
    assert [(org, total) for org, _, _, total, _ in done] == [
        (org, _cents(8 * (1 + i) * ON_DEMAND)) for i, org in enumerate(orgs)
    ]
    assert (
        invoices.close_period(db=db, clock=clock, principal=OPERATOR, period=APRIL).finalized == ()
    )
    assert _snapshot(db) == done  # a third run changes nothing: nothing is billed twice
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count(CreditNoteRow.id))) == 0


def test_rounding_is_once_per_line_and_configurable(
    acme: Client, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    _contract(
        db,
        clock,
        org_id=org,
        kind="commit_spend",
        start_at=_t(4),
        end_at=_t(5),
        amount=Decimal("100.005"),
    )
    with db.transaction() as s:
        up = agreement_lines.agreement_charges(s, org, APRIL, [], now=_t(5), rounding=ROUND_HALF_UP)
        even = agreement_lines.agreement_charges(
            s, org, APRIL, [], now=_t(5), rounding=ROUND_HALF_EVEN
        )
    assert [c.amount for c in up] == [Decimal("100.01")]
    assert [c.amount for c in even] == [Decimal("100.00")]
    assert load_settings(billing_rounding="ROUND_HALF_EVEN").billing_rounding == ROUND_HALF_EVEN
    assert load_settings().billing_grace_days == 3
    with pytest.raises(ValidationError):
        load_settings(billing_rounding="ROUND_SOMETIMES")


def test_backstop_is_operator_revenue_for_unsold_capacity(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    ctr = _contract(
        db,
        clock,
        org_id=org,
        kind="backstop",
        start_at=_t(4),
        end_at=_t(5),
        gpu_model=node.gpu_model,
        gpus=16,
        rate=Decimal("1.00"),
        counterparty="a GPU vendor",
    )
    _alloc(db, org, node, _t(4, 3), 10)  # 80 GPU-hours sold
    with db.transaction() as s:
        [rev] = reports.backstop_revenue(s, APRIL, now=_t(5, 2))
        backlog = reports.backlog_by_org(s, _t(4))
    assert (rev.contract_id, rev.sold_gpu_hours, rev.amount) == (
        ctr.id,
        Decimal(80),
        Decimal(16 * 720 - 80),
    )
    assert backlog == {}  # contingent: not contracted value
    clock.set(_t(5, 2))
    assert _build(db, clock, org, APRIL).invoice.total == _cents(80 * ON_DEMAND)  # no line


def test_backstop_sold_hours_count_every_org_of_its_gpu_model_only(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    _contract(
        db,
        clock,
        org_id=org,
        kind="backstop",
        start_at=_t(4),
        end_at=_t(5),
        gpu_model=node.gpu_model,
        gpus=16,
        rate=Decimal("1.00"),
    )
    _alloc(db, org, node, _t(4, 3), 10)  # 80 GPU-hours
    _alloc(db, "org_other", node, _t(4, 10), 5)  # another tenant's: 40 GPU-hours
    other_model = _alloc(db, "org_other", node, _t(4, 20), 100)
    with db.transaction() as s:
        row = s.get(AllocationRow, other_model)
        assert row is not None
        row.gpu_model = "not-" + node.gpu_model  # another model's time sells none of this one
    with db.transaction() as s:
        [rev] = reports.backstop_revenue(s, APRIL, now=_t(5, 2))
    assert (rev.sold_gpu_hours, rev.amount) == (Decimal(120), Decimal(16 * 720 - 120))


def test_invoicing_worker_runs_last_month_under_a_lease(
    fleet: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    _alloc(db, "org_t_w", node, _t(4, 2), 2)
    clock.set(_t(5, 10))
    one = InvoicingWorker(db, clock, holder="one")
    two = InvoicingWorker(db, clock, holder="two")
    result = one.run_once()
    assert result is not None
    assert (result.period, len(result.finalized)) == ("2026-04", 1)
    assert two.run_once() is None  # the other process does not hold the lease
    again = one.run_once()
    assert again is not None
    assert again.unchanged == result.finalized
    assert [total for _, _, _, total, _ in _snapshot(db)] == [_cents(16 * ON_DEMAND)]


def test_late_usage_inside_a_commitment_is_not_billed_twice(
    acme: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    ctr = _contract(
        db,
        clock,
        org_id=org,
        kind="commit_spend",
        start_at=_t(4),
        end_at=_t(5),
        amount=Decimal(1000),
    )
    _alloc(db, org, node, _t(4, 3), 10)
    clock.set(_t(5, 4))
    april = _finalize(db, clock, _build(db, clock, org, APRIL).invoice.id)
    usage = _cents(80 * ON_DEMAND)
    assert _lines(april) == [("usage", usage), ("true_up", 1000 - usage)]
    assert april.invoice.total == 1000

    late = _alloc(db, org, node, _t(4, 20), 1)  # a fact for April arrives after it closed
    may = _build(db, clock, org, MAY)
    more = _cents(8 * ON_DEMAND)
    # the late hour is billed, and taken off April's true-up: April still comes to 1,000.00
    assert [(ln.kind, ln.usage_period, ln.amount, ln.reference_id) for ln in may.lines] == [
        ("adjustment", "2026-04", more, None),
        ("true_up", "2026-04", -more, ctr.id),
    ]
    assert may.lines[0].fact_ids == [late]
    assert may.invoice.total == 0
    clock.set(_t(6, 4))
    _finalize(db, clock, may.invoice.id)
    assert _build(db, clock, org, Period.month("2026-06")).lines == []  # settled once


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_gpu_second_is_billed_once_across_crashes_and_late_facts(
    seed: int, fleet: Client, node: NodeRow, db: Database, clock: VirtualClock
) -> None:
    """Random facts for three orgs, the monthly run crashing at a random org, late facts (more
    GPU time, and failures that take some back) after April closed: in the end, what April's
    finalized invoices and credit notes bill per org equals rating April from scratch."""
    import random

    from neocloud.billing.rating import rate

    rnd = random.Random(seed)
    orgs = ["org_p_a", "org_p_b", "org_p_c"]
    for org in orgs:
        for _ in range(rnd.randint(1, 3)):
            _alloc(db, org, node, _t(4, rnd.randint(1, 28), rnd.randint(0, 20)), rnd.randint(1, 3))

    def run(period: Period, crash_at: str | None) -> None:
        def boom(org: str) -> None:
            if org == crash_at:
                raise RuntimeError("crash")

        try:
            invoices.close_period(
                db=db, clock=clock, principal=OPERATOR, period=period, after_org=boom
            )
        except RuntimeError:
            invoices.close_period(db=db, clock=clock, principal=OPERATOR, period=period)

    clock.set(_t(5, 4))
    run(APRIL, rnd.choice(orgs))
    # late facts for April: more GPU time for one org, a failure of the node for a while
    _alloc(db, rnd.choice(orgs), node, _t(4, rnd.randint(1, 28)), rnd.randint(1, 2))
    fail_at = _t(4, rnd.randint(1, 28), rnd.randint(0, 20))
    with db.transaction() as s:
        s.add(NodeEventRow(id="evt_p1", node_id=node.id, at=fail_at, to_state="failed", actor="t"))
        back = fail_at + timedelta(hours=rnd.randint(1, 30))
        s.add(NodeEventRow(id="evt_p2", node_id=node.id, at=back, to_state="healthy", actor="t"))
    clock.set(_t(6, 4))
    run(MAY, rnd.choice(orgs))
    run(MAY, None)  # and once more: nothing changes

    with db.transaction() as s:
        for org in orgs:
            book = service.price_book_at(s, APRIL.start)
            intervals = service.load_intervals(s, org, APRIL)
            outages = service.load_outages(s, {iv.node_id for iv in intervals}, APRIL.end)
            fresh = rate(intervals, book, (), APRIL, outages=outages)
            want = (
                sum((ln.gpu_seconds for ln in fresh), Decimal(0)),
                sum((ln.amount.amount for ln in fresh), Decimal(0)),
            )
            billed = ledger.billed_usage(s, org, "2026-04")
            got = (
                sum((b.gpu_seconds for b in billed), Decimal(0)),
                sum((b.amount for b in billed), Decimal(0)),
            )
            assert got == want, org
            finals = s.scalars(
                sa.select(InvoiceRow.period)
                .where(InvoiceRow.org_id == org)
                .order_by(InvoiceRow.period)
            ).all()
            assert list(finals) == ["2026-04", "2026-05"]  # one invoice per month, no more
