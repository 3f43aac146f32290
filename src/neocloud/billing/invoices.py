"""Monthly invoices: a draft rebuilt from the facts on demand, then finalized and never changed.

Late facts for a finalized month are not written into it: the next draft carries an
``adjustment`` line per (SKU, project) with the difference between re-rating that month now and
what its finalized invoices already billed. So every GPU-second is billed exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.rating import Line, Period, rate
from neocloud.billing.service import load_intervals, load_outages, price_book_at
from neocloud.billing.tables import InvoiceLineRow, InvoiceRow
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound
from neocloud.kernel.ids import new_id

DRAFT, FINALIZED = "draft", "finalized"
USAGE, ADJUSTMENT = "usage", "adjustment"
# Earlier months whose late facts a draft picks up (facts arrive at most 35 days late).
LOOKBACK_MONTHS = 2
# A month may be finalized this long after it ends: stragglers still land on its draft.
DEFAULT_GRACE = timedelta(days=3)


@dataclass(frozen=True, slots=True)
class LineDraft:
    kind: str
    usage_period: str
    sku: str
    project_id: str | None
    gpu_seconds: Decimal
    unit_price: Decimal
    amount: Decimal
    fact_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Billed:
    """What finalized invoices already billed for one (SKU, project) of a month."""

    sku: str
    project_id: str | None
    gpu_seconds: Decimal
    amount: Decimal
    fact_ids: tuple[str, ...]


def period_name(period: Period) -> str:
    return period.start.strftime("%Y-%m")


def previous(period: Period) -> Period:
    return Period.month(period_name(Period(period.start - timedelta(days=1), period.start)))


def usage_lines(lines: Iterable[Line], usage_period: str) -> list[LineDraft]:
    return [
        LineDraft(
            USAGE,
            usage_period,
            ln.sku.code,
            ln.project_id,
            ln.gpu_seconds,
            ln.unit_price,
            ln.amount.amount,
            ln.fact_ids,
        )
        for ln in lines
    ]


def adjustment_lines(
    rerated: Iterable[Line], billed: Iterable[Billed], usage_period: str
) -> list[LineDraft]:
    """Pure: the difference between a month rated now and what was billed for it, one line per
    (SKU, project) that changed; its facts are those not billed before (or all it rates)."""
    new = {(ln.sku.code, ln.project_id): ln for ln in rerated}
    old: dict[tuple[str, str | None], tuple[Decimal, Decimal, set[str]]] = {}
    for b in billed:
        secs, amount, ids = old.get((b.sku, b.project_id), (Decimal(0), Decimal(0), set()))
        old[(b.sku, b.project_id)] = (
            secs + b.gpu_seconds,
            amount + b.amount,
            ids | set(b.fact_ids),
        )
    out = []
    for key in sorted(set(new) | set(old), key=lambda k: (k[0], k[1] or "")):
        line = new.get(key)
        secs, amount, ids = old.get(key, (Decimal(0), Decimal(0), set()))
        d_secs = (line.gpu_seconds if line else Decimal(0)) - secs
        d_amount = (line.amount.amount if line else Decimal(0)) - amount
        if d_secs == 0 and d_amount == 0:
            continue
        facts = tuple(f for f in (line.fact_ids if line else ()) if f not in ids)
        unit = line.unit_price if line else Decimal(0)
        out.append(
            LineDraft(ADJUSTMENT, usage_period, key[0], key[1], d_secs, unit, d_amount, facts)
        )
    return out


def _billed(s: Session, org_id: str, usage_period: str) -> list[Billed]:
    query = (
        sa.select(InvoiceLineRow)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.org_id == org_id,
            InvoiceRow.state == FINALIZED,
            InvoiceLineRow.usage_period == usage_period,
        )
    )
    return [
        Billed(r.sku, r.project_id, r.gpu_seconds, r.amount, tuple(r.fact_ids))
        for r in s.scalars(query)
    ]


def _rate(s: Session, org_id: str, period: Period, now: datetime) -> tuple[str, list[Line]]:
    book = price_book_at(s, period.start)
    intervals = load_intervals(s, org_id, period)
    outages = load_outages(s, {iv.node_id for iv in intervals}, period.end)
    return book.version, list(rate(intervals, book, (), period, outages=outages, as_of=now))


def _is_finalized(s: Session, org_id: str, name: str) -> bool:
    query = sa.select(InvoiceRow.id).where(
        InvoiceRow.org_id == org_id, InvoiceRow.period == name, InvoiceRow.state == FINALIZED
    )
    return s.scalars(query).first() is not None


def _draft_lines(
    s: Session, org_id: str, period: Period, now: datetime
) -> tuple[str, list[LineDraft]]:
    book_id, lines = _rate(s, org_id, period, now)
    drafts = usage_lines(lines, period_name(period))
    earlier = period
    for _ in range(LOOKBACK_MONTHS):
        earlier = previous(earlier)
        name = period_name(earlier)
        if _is_finalized(s, org_id, name):
            _, rerated = _rate(s, org_id, earlier, now)
            drafts += adjustment_lines(rerated, _billed(s, org_id, name), name)
    return book_id, drafts


def _lock(s: Session, org_id: str, name: str) -> InvoiceRow | None:
    query = (
        sa.select(InvoiceRow)
        .where(InvoiceRow.org_id == org_id, InvoiceRow.period == name)
        .with_for_update()
    )
    return s.scalars(query).first()


def _rebuild(s: Session, inv: InvoiceRow, period: Period, now: datetime) -> None:
    book_id, drafts = _draft_lines(s, inv.org_id, period, now)
    s.execute(sa.delete(InvoiceLineRow).where(InvoiceLineRow.invoice_id == inv.id))
    for i, d in enumerate(drafts):
        s.add(
            InvoiceLineRow(
                id=new_id("line", at=now),
                invoice_id=inv.id,
                position=i,
                kind=d.kind,
                usage_period=d.usage_period,
                sku=d.sku,
                project_id=d.project_id,
                gpu_seconds=d.gpu_seconds,
                unit_price=d.unit_price,
                amount=d.amount,
                fact_ids=list(d.fact_ids),
            )
        )
    inv.price_book_id = book_id
    inv.total = sum((d.amount for d in drafts), Decimal(0))
    inv.rated_at = now


def build_invoice(
    *, db: Database, clock: Clock, principal: Principal, org_id: str, period: Period
) -> str:
    """Create or refresh ``org_id``'s draft for ``period`` from the facts (operator admins);
    a finalized invoice is returned unchanged. Returns the invoice id."""
    principal.require_operator(write=True)
    now = clock.now()
    name = period_name(period)
    with db.transaction() as s:
        inv = _lock(s, org_id, name)
        if inv is None:
            inv = InvoiceRow(
                id=new_id("inv", at=now),
                org_id=org_id,
                period=name,
                state=DRAFT,
                currency="USD",
                price_book_id="",
                total=Decimal(0),
                rated_at=now,
                created_at=now,
            )
            s.add(inv)
            s.flush()  # a concurrent create of the same (org, period) fails here: a conflict
        if inv.state == DRAFT:
            _rebuild(s, inv, period, now)
        return inv.id


def finalize_invoice(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    invoice_id: str,
    grace: timedelta = DEFAULT_GRACE,
) -> str:
    """Rebuild the draft one last time and freeze it (operator admins). Finalizing again is a
    no-op; before the month has ended (and ``grace`` passed) it is a conflict."""
    principal.require_operator(write=True)
    now = clock.now()
    with db.transaction() as s:
        inv = s.scalars(
            sa.select(InvoiceRow).where(InvoiceRow.id == invoice_id).with_for_update()
        ).first()
        if inv is None:
            raise NotFound(f"no invoice {invoice_id} exists", code="invoice_not_found")
        if inv.state == FINALIZED:
            return inv.id
        period = Period.month(inv.period)
        if now < period.end + grace:
            raise Conflict(
                f"invoice {inv.id} for {inv.period} can be finalized from "
                f"{(period.end + grace).isoformat()} (the month plus a grace period of "
                f"{grace.days} days), not before",
                code="period_not_closed",
            )
        _rebuild(s, inv, period, now)
        inv.state = FINALIZED
        inv.finalized_at = now
        return inv.id


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: InvoiceRow
    lines: Sequence[InvoiceLineRow]


def get_invoice(*, db: Database, principal: Principal, invoice_id: str) -> InvoiceView:
    """An invoice with its lines; tenants see their own org's only (others: not found)."""
    with db.transaction() as s:
        inv = s.get(InvoiceRow, invoice_id)
        if inv is None or not _may_read(principal, inv.org_id):
            raise NotFound(f"no invoice {invoice_id} exists", code="invoice_not_found")
        lines = list(
            s.scalars(
                sa.select(InvoiceLineRow)
                .where(InvoiceLineRow.invoice_id == inv.id)
                .order_by(InvoiceLineRow.position)
            )
        )
        s.expunge_all()
        return InvoiceView(inv, lines)


def list_invoices(*, db: Database, principal: Principal, org_id: str) -> list[InvoiceRow]:
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        rows = list(
            s.scalars(
                sa.select(InvoiceRow).where(InvoiceRow.org_id == org_id).order_by(InvoiceRow.period)
            )
        )
        s.expunge_all()
        return rows


def _may_read(principal: Principal, org_id: str) -> bool:
    return principal.is_operator or principal.org_id == org_id
