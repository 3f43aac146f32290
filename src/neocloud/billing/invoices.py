"""Monthly invoices: a draft rebuilt from the facts on demand, then finalized and never changed.

Late facts for a finalized month are not written into it: the next draft carries an
``adjustment`` line per (SKU, project) with the difference between re-rating that month now and
what its finalized invoices (and credit notes) already billed; a difference that lowers the
bill is issued as a credit note on the finalized invoice instead. So every GPU-second is billed
exactly once.

The arithmetic is pure (``billing.adjustments``); what was billed is read back by
``billing.ledger``. Agreements (``billing.agreement_lines``) add their lines after usage:
reservation charges, true-ups, prepaid drawdowns and credits. ``close_period`` is the automatic
monthly run: drafts for every org with activity, finalized once the grace period is over; one
transaction per org, so a crash in the middle leaves whole invoices behind and running it again
finishes the rest; an org that fails is reported and skipped, never fatal to the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing import ledger
from neocloud.billing.adjustments import (
    LineDraft,
    adjustment_lines,
    agreement_deltas,
    charge_lines,
    line_json,
    period_name,
    previous,
    restorations,
    total,
    usage_lines,
)
from neocloud.billing.agreement_lines import agreement_charges
from neocloud.billing.contracts import Charge, Spend
from neocloud.billing.kinds import ContractKind, InvoiceState, LineKind
from neocloud.billing.rating import Line, Period
from neocloud.billing.service import InvoicePreview, rate_one_org
from neocloud.billing.tables import (
    ContractRow,
    CreditNoteRow,
    InvoiceLineRow,
    InvoiceRow,
    UsageEventRow,
)
from neocloud.compute.tables import AllocationRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NeocloudError, NotFound
from neocloud.kernel.ids import new_id

log = logging.getLogger(__name__)
# Earlier months whose late facts a draft picks up (facts arrive at most 35 days late).
LOOKBACK_MONTHS = 2
# A month may be finalized this long after it ends: stragglers still land on its draft.
DEFAULT_GRACE = timedelta(days=3)


def _rate(
    s: Session, org_id: str, period: Period, now: datetime, rounding: str
) -> tuple[str, list[Line]]:
    rated = rate_one_org(s, org_id, period, now, rounding=rounding)  # GPU time and tokens
    return rated.price_book_id, rated.invoice_lines()


def _finalized(s: Session, org_id: str, name: str) -> InvoiceRow | None:
    query = sa.select(InvoiceRow).where(
        InvoiceRow.org_id == org_id,
        InvoiceRow.period == name,
        InvoiceRow.state == InvoiceState.FINALIZED,
    )
    return s.scalars(query).first()


@dataclass
class DraftLines:
    price_book_id: str
    lines: list[LineDraft]
    # Late facts that lower a finalized month: (finalized invoice, negative adjustment lines).
    credit_notes: list[tuple[InvoiceRow, list[LineDraft]]] = field(default_factory=list)


def _draft_lines(
    s: Session, org_id: str, period: Period, now: datetime, rounding: str = ROUND_HALF_UP
) -> DraftLines:
    book_id, lines = _rate(s, org_id, period, now, rounding)
    out = DraftLines(book_id, usage_lines(lines, period_name(period)))
    earlier = period
    for _ in range(LOOKBACK_MONTHS):
        earlier = previous(earlier)
        name = period_name(earlier)
        final = _finalized(s, org_id, name)
        if final is not None:
            _, rerated = _rate(s, org_id, earlier, now, rounding)
            changes = adjustment_lines(rerated, ledger.billed_usage(s, org_id, name), name)
            spent = [Spend(ln.sku.code, ln.amount.amount) for ln in rerated]
            fresh = agreement_charges(
                s, org_id, earlier, spent, now=now, rounding=rounding, settle=False
            )
            billed = ledger.billed_agreements(s, org_id, name)
            changes += agreement_deltas(fresh, billed, name)
            # What the month comes to now, less what it billed: more goes on this draft, less
            # is a credit note on the finalized invoice.
            if total(changes) >= 0:
                out.lines += changes
            else:
                out.credit_notes.append((final, changes))
    spend = [Spend(d.sku, d.amount, d.kind == LineKind.USAGE) for d in out.lines]
    out.lines += charge_lines(
        agreement_charges(s, org_id, period, spend, now=now, rounding=rounding)
    )
    return out


def _lock(s: Session, org_id: str, name: str) -> InvoiceRow | None:
    query = (
        sa.select(InvoiceRow)
        .where(InvoiceRow.org_id == org_id, InvoiceRow.period == name)
        .with_for_update()
    )
    return s.scalars(query).first()


def _issue_credit_notes(
    s: Session, notes: list[tuple[InvoiceRow, list[LineDraft]]], now: datetime
) -> None:
    """Late facts lowered a finalized month: a credit note on it (the finalized invoice stays
    as it was), counted as billed for that month from now on. What the invoice paid with
    credit or prepaid balance goes back there first; the note's total is what is owed back."""
    for inv, lines in notes:
        lowered = total(lines)
        paid = ledger.paid_by(s, inv.id)
        restores = restorations(paid, ledger.given_back(s, inv.id), -lowered)
        back = sum((Decimal(r["amount"]) for r in restores), Decimal(0))
        s.add(
            CreditNoteRow(
                id=new_id("cn", at=now),
                org_id=inv.org_id,
                invoice_id=inv.id,
                usage_period=inv.period,
                currency=inv.currency,
                total=lowered + back,
                lines=[line_json(d) for d in lines] + restores,
                created_at=now,
            )
        )


def _rebuild(
    s: Session, inv: InvoiceRow, period: Period, now: datetime, rounding: str = ROUND_HALF_UP
) -> None:
    drafts = _draft_lines(s, inv.org_id, period, now, rounding)
    _issue_credit_notes(s, drafts.credit_notes, now)
    s.execute(sa.delete(InvoiceLineRow).where(InvoiceLineRow.invoice_id == inv.id))
    for i, d in enumerate(drafts.lines):
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
                reference_id=d.reference_id,
                input_tokens=d.input_tokens,
                output_tokens=d.output_tokens,
                input_price_per_1m=d.input_price_per_1m,
                output_price_per_1m=d.output_price_per_1m,
            )
        )
    inv.price_book_id = drafts.price_book_id
    inv.total = total(drafts.lines)
    inv.rated_at = now


def _open(s: Session, org_id: str, period: Period, now: datetime) -> InvoiceRow:
    """``org_id``'s invoice for ``period``, locked; an empty draft is created if none exists."""
    name = period_name(period)
    inv = _lock(s, org_id, name)
    if inv is None:
        inv = InvoiceRow(
            id=new_id("inv", at=now),
            org_id=org_id,
            period=name,
            state=InvoiceState.DRAFT,
            currency="USD",
            price_book_id="",
            total=Decimal(0),
            rated_at=now,
            created_at=now,
        )
        s.add(inv)
        s.flush()  # a concurrent create of the same (org, period) fails here: a conflict
    return inv


def _build(s: Session, org_id: str, period: Period, now: datetime, rounding: str) -> InvoiceRow:
    inv = _open(s, org_id, period, now)
    if inv.state == InvoiceState.DRAFT:
        _rebuild(s, inv, period, now, rounding)
    return inv


def build_invoice(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    org_id: str,
    period: Period,
    rounding: str = ROUND_HALF_UP,
) -> str:
    """Create or refresh ``org_id``'s draft for ``period`` from the facts (operator admins);
    a finalized invoice is returned unchanged. Returns the invoice id."""
    principal.require_operator(write=True)
    now = clock.now()
    with db.transaction() as s:
        return _build(s, org_id, period, now, rounding).id


def _finalize(s: Session, inv: InvoiceRow, now: datetime, grace: timedelta, rounding: str) -> None:
    period = Period.month(inv.period)
    if now < period.end + grace:
        raise Conflict(
            f"invoice {inv.id} for {inv.period} can be finalized from "
            f"{(period.end + grace).isoformat()} (the month plus a grace period of "
            f"{grace.days} days), not before",
            code="period_not_closed",
        )
    _rebuild(s, inv, period, now, rounding)
    inv.state = InvoiceState.FINALIZED
    inv.finalized_at = now


def finalize_invoice(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    invoice_id: str,
    grace: timedelta = DEFAULT_GRACE,
    rounding: str = ROUND_HALF_UP,
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
        if inv.state != InvoiceState.FINALIZED:
            _finalize(s, inv, now, grace, rounding)
        return inv.id


# -- the monthly run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrgFailure:
    """An org the monthly run could not invoice: its transaction rolled back, the others went
    on. ``code`` is the error's machine-readable code (``internal_error`` for a bug)."""

    org_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CloseResult:
    period: str
    drafts: tuple[str, ...]  # invoice ids left as drafts (grace period not over)
    finalized: tuple[str, ...]  # finalized by this run
    unchanged: tuple[str, ...]  # already finalized before this run
    failed: tuple[OrgFailure, ...] = ()  # orgs skipped this run, each with why


def orgs_to_invoice(s: Session, period: Period) -> list[str]:
    """Every org with something to bill for ``period``: GPU time, usage events, an agreement
    in force, an invoice already started, or an invoice of the months before whose late facts
    the new one may carry."""
    earlier = [period_name(period)]
    for _ in range(LOOKBACK_MONTHS):
        earlier.append(period_name(previous(Period.month(earlier[-1]))))
    queries = [
        sa.select(AllocationRow.org_id).where(
            AllocationRow.start_at < period.end,
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > period.start),
        ),
        sa.select(UsageEventRow.org_id).where(
            UsageEventRow.time >= period.start, UsageEventRow.time < period.end
        ),
        sa.select(ContractRow.org_id).where(
            ContractRow.start_at < period.end,
            ContractRow.end_at > period.start,
            ContractRow.kind != ContractKind.BACKSTOP,
        ),
        sa.select(InvoiceRow.org_id).where(InvoiceRow.period.in_(earlier)),
    ]
    orgs: set[str] = set()
    for q in queries:
        orgs.update(s.scalars(q.distinct()))
    return sorted(orgs)


def close_period(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    period: Period,
    grace: timedelta = DEFAULT_GRACE,
    rounding: str = ROUND_HALF_UP,
    after_org: Callable[[str], None] | None = None,
) -> CloseResult:
    """Invoice ``period`` for every org (operator admins): build or refresh each draft, and
    finalize it once the month and ``grace`` are over. One transaction per org, in org order:
    running it twice gives the same invoices, and a crash between orgs (``after_org`` lets a
    test raise there) loses nothing and bills nothing twice when it runs again. An org whose
    invoice fails (figures out of range, a bug) is rolled back, logged with its id and error
    code, listed in ``failed`` and skipped: the orgs after it still get their invoices."""
    principal.require_operator(write=True)
    with db.transaction() as s:
        orgs = orgs_to_invoice(s, period)
    drafts: list[str] = []
    finalized: list[str] = []
    unchanged: list[str] = []
    failed: list[OrgFailure] = []
    outcome = {InvoiceState.DRAFT: drafts, InvoiceState.FINALIZED: finalized, None: unchanged}
    for org_id in orgs:
        try:
            state, invoice_id = _close_org(db, clock, org_id, period, grace, rounding)
        except Exception as exc:  # one org's bad data never stops another org's invoice
            failed.append(_failure(org_id, period, exc))
        else:
            outcome[state].append(invoice_id)
        if after_org is not None:
            after_org(org_id)
    return CloseResult(
        period_name(period), tuple(drafts), tuple(finalized), tuple(unchanged), tuple(failed)
    )


def _close_org(
    db: Database, clock: Clock, org_id: str, period: Period, grace: timedelta, rounding: str
) -> tuple[InvoiceState | None, str]:
    """One org's part of the run, in its own transaction: (what this run made of its invoice,
    its id); None when it was finalized before."""
    now = clock.now()
    with db.transaction() as s:
        inv = _open(s, org_id, period, now)
        if inv.state == InvoiceState.FINALIZED:
            return None, inv.id
        if now >= period.end + grace:
            _finalize(s, inv, now, grace, rounding)  # rates the draft once, then freezes it
            return InvoiceState.FINALIZED, inv.id
        _rebuild(s, inv, period, now, rounding)
        return InvoiceState.DRAFT, inv.id


def _failure(org_id: str, period: Period, exc: Exception) -> OrgFailure:
    """Report and log an org the run skipped: a domain error with its code and message, any
    other error as ``internal_error`` with its traceback in the log (never in the answer)."""
    if isinstance(exc, NeocloudError):
        code, message = exc.code, exc.message
        log.error(
            "invoicing %s for %s skipped: %s (%s)", org_id, period_name(period), code, message
        )
    else:
        code, message = "internal_error", "an internal error stopped this org's invoice"
        log.exception("invoicing %s for %s skipped: internal_error", org_id, period_name(period))
    return OrgFailure(org_id, code, message)


def close_previous_month(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    grace: timedelta = DEFAULT_GRACE,
    rounding: str = ROUND_HALF_UP,
) -> CloseResult:
    """What a worker calls on a timer: ``close_period`` for the month before now."""
    now = clock.now()
    this_month = Period.month(now.strftime("%Y-%m"))
    return close_period(
        db=db,
        clock=clock,
        principal=principal,
        period=previous(this_month),
        grace=grace,
        rounding=rounding,
    )


# -- reads ---------------------------------------------------------------------------------------


def preview_invoice(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    org_id: str,
    period: Period,
    rounding: str = ROUND_HALF_UP,
) -> tuple[InvoicePreview, list[Charge]]:
    """The org's invoice for ``period`` as it stands now, with its agreement charges
    (reservations, true-ups, drawdowns, credits) priced on the same spend that a stored invoice
    would hold, GPU and token lines alike; one transaction, one instant. Tenants see their own
    org only."""
    principal.require_org_role(org_id, Role.VIEWER)
    now = clock.now()
    with db.transaction() as s:
        rated = rate_one_org(s, org_id, period, now, rounding=rounding)
        preview = InvoicePreview(
            org_id,
            period,
            rated.price_book_id,
            rated.currency,
            rated.lines,
            min(now, period.end),
            rated.token_lines,
            rated.service_lines,
        )
        spend = [Spend(ln.sku.code, ln.amount.amount) for ln in rated.invoice_lines()]
        charges = agreement_charges(
            s, org_id, period, spend, now=now, rounding=rounding, currency=rated.currency
        )
    return preview, charges


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


def list_invoices(
    *, db: Database, principal: Principal, org_id: str, limit: int = 100, after: str | None = None
) -> Page[InvoiceRow]:
    """The org's invoices (without lines), oldest first, a page at a time."""
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        query = sa.select(InvoiceRow).where(InvoiceRow.org_id == org_id)
        page = paginate(s, query, InvoiceRow.id, limit=limit, after=after)
        s.expunge_all()
        return page


def list_credit_notes(
    *, db: Database, principal: Principal, org_id: str, limit: int = 100, after: str | None = None
) -> Page[CreditNoteRow]:
    """The org's credit notes, oldest first, a page at a time."""
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        query = sa.select(CreditNoteRow).where(CreditNoteRow.org_id == org_id)
        page = paginate(s, query, CreditNoteRow.id, limit=limit, after=after)
        s.expunge_all()
        return page


def _may_read(principal: Principal, org_id: str) -> bool:
    return principal.is_operator or principal.org_id == org_id
