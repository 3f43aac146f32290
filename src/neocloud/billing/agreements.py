"""Billing agreements: contracts the operator records for an org, credit grants, and the lines
they put on an invoice (reservation charges, take-or-pay true-ups, prepaid drawdowns, credits).

The money rules are pure (``billing.contracts``); this module loads the agreements and the
facts they need, and says what is left of them (``backlog_by_org``) for the revenue reports.

Line order on an invoice: usage (and adjustments) first, then per reservation contract its
charge and the usage it already covers (negative), true-ups, prepaid charges and drawdowns,
credits last, applied to what is still due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.contracts import (
    Grant,
    apply_credits,
    backstop,
    gpu_hours_value,
    monthly_value,
    overlap,
    prorated,
    round_line,
    true_up,
)
from neocloud.billing.rating import (
    RESERVED,
    TERMS,
    Period,
    Sku,
    billable_seconds,
    merge_spans,
    rate,
)
from neocloud.billing.service import (
    InvoicePreview,
    load_intervals,
    load_outages,
    price_book_at,
    price_books_during,
    rate_org_period,
)
from neocloud.billing.tables import (
    ContractRow,
    CreditGrantRow,
    CreditNoteRow,
    InvoiceLineRow,
    InvoiceRow,
)
from neocloud.compute.tables import ReservationRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.kernel.money import Money
from neocloud.tenancy.tables import OrgRow

COMMIT_SPEND, COMMIT_CAPACITY, PREPAID, RESERVATION, BACKSTOP = (
    "commit_spend",
    "commit_capacity",
    "prepaid",
    "reservation",
    "backstop",
)
KINDS = (COMMIT_SPEND, COMMIT_CAPACITY, PREPAID, RESERVATION, BACKSTOP)
UPFRONT, MONTHLY = "upfront", "monthly"
# Invoice line kinds this module writes (``usage`` and ``adjustment`` are the rating's).
RESERVATION_CHARGE, RESERVED_USAGE, TRUE_UP, PREPAYMENT, DRAWDOWN, CREDIT = (
    "reservation",
    "reserved_usage",
    "true_up",
    "prepaid",
    "drawdown",
    "credit",
)
FINALIZED = "finalized"
_YEAR = timedelta(days=365)


# -- contracts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """What an operator asks for; ``kind`` says which of the optional fields are required."""

    org_id: str
    kind: str
    start_at: datetime | None = None
    end_at: datetime | None = None
    amount: Decimal | None = None
    gpu_model: str | None = None
    gpus: int | None = None
    rate: Decimal | None = None
    reservation_id: str | None = None
    term: str | None = None
    billing: str | None = None
    counterparty: str | None = None
    currency: str = "USD"
    note: str | None = None


def _require(value: object, kind: str, param: str) -> None:
    if value is None:
        raise ValidationFailed(
            f"a {kind} contract needs {param}", code="missing_contract_field", param=param
        )


def _positive(value: Decimal | int | None, param: str, *, zero_ok: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise ValidationFailed(
            f"{param} must be {'zero or more' if zero_ok else 'positive'}, not {value}",
            code="invalid_amount",
            param=param,
        )


def _check_org(s: Session, org_id: str) -> None:
    if s.get(OrgRow, org_id) is None:
        raise NotFound(f"no organization {org_id} exists", code="org_not_found", param="org_id")


def _reservation_gpus(s: Session, rsv: ReservationRow) -> int:
    counts = s.scalars(sa.select(NodeRow.gpu_count).where(NodeRow.id.in_(rsv.node_ids))).all()
    return sum(counts) if len(counts) == rsv.node_count else rsv.node_count * 8


def create_contract(
    *, db: Database, clock: Clock, principal: Principal, terms: ContractTerms
) -> ContractRow:
    """Record a contract for an org (operator admins). 404 for an unknown org or reservation;
    422 for an unknown kind, a missing field, a negative amount or an end before the start.
    A reservation contract takes its dates, GPU model and GPU count from the reservation (the
    term: ``1y`` for a year or longer, else ``1m``, unless given)."""
    principal.require_operator(write=True)
    t = terms
    if t.kind not in KINDS:
        raise ValidationFailed(
            f"kind must be one of {', '.join(KINDS)}, not {t.kind!r}",
            code="invalid_contract_kind",
            param="kind",
        )
    for param, value in (("amount", t.amount), ("rate", t.rate)):
        _positive(value, param)
    _positive(t.gpus, "gpus")
    if t.term is not None and t.term not in TERMS:
        raise ValidationFailed(
            f"term must be one of {', '.join(TERMS)}", code="invalid_term", param="term"
        )
    if t.billing is not None and t.billing not in (UPFRONT, MONTHLY):
        raise ValidationFailed(
            "billing must be upfront or monthly", code="invalid_billing", param="billing"
        )
    now = clock.now()
    with db.transaction() as s:
        _check_org(s, t.org_id)
        start, end, gpu_model, gpus, term = t.start_at, t.end_at, t.gpu_model, t.gpus, t.term
        if t.kind == RESERVATION:
            _require(t.reservation_id, t.kind, "reservation_id")
            rsv = s.get(ReservationRow, t.reservation_id)
            if rsv is None or rsv.org_id != t.org_id:
                raise NotFound(
                    f"no reservation {t.reservation_id} exists for {t.org_id}",
                    code="reservation_not_found",
                    param="reservation_id",
                )
            start, end = start or rsv.start_at, end or rsv.end_at
            gpu_model, gpus = rsv.gpu_model, _reservation_gpus(s, rsv)
            term = term or ("1y" if rsv.end_at - rsv.start_at >= _YEAR else "1m")
        _require(start, t.kind, "start_at")
        _require(end, t.kind, "end_at")
        assert start is not None
        assert end is not None
        if end <= start:
            raise ValidationFailed(
                "a contract ends after it starts", code="invalid_dates", param="end_at"
            )
        if t.kind in (COMMIT_SPEND, PREPAID):
            _require(t.amount, t.kind, "amount")
        if t.kind in (COMMIT_CAPACITY, BACKSTOP):
            _require(gpus, t.kind, "gpus")
            _require(t.rate, t.kind, "rate")
        if t.kind == BACKSTOP:
            _require(gpu_model, t.kind, "gpu_model")
        row = ContractRow(
            id=new_id("ctr", at=now),
            org_id=t.org_id,
            kind=t.kind,
            start_at=start,
            end_at=end,
            currency=t.currency,
            amount=t.amount,
            gpu_model=gpu_model,
            gpus=gpus,
            rate=t.rate,
            reservation_id=t.reservation_id if t.kind == RESERVATION else None,
            term=term if t.kind == RESERVATION else None,
            billing=(t.billing or MONTHLY) if t.kind == RESERVATION else None,
            counterparty=t.counterparty,
            note=t.note,
            created_by=principal.key_id,
            created_at=now,
        )
        s.add(row)
        s.flush()
        s.expunge(row)
        return row


def get_contract(*, db: Database, principal: Principal, contract_id: str) -> ContractRow:
    """A contract; tenants see their own org's only (others: not found)."""
    with db.transaction() as s:
        row = s.get(ContractRow, contract_id)
        if row is None or not (principal.is_operator or principal.org_id == row.org_id):
            raise NotFound(f"no contract {contract_id} exists", code="contract_not_found")
        s.expunge(row)
        return row


def list_contracts(
    *, db: Database, principal: Principal, org_id: str, limit: int, after: str | None
) -> Page[ContractRow]:
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        query = sa.select(ContractRow).where(ContractRow.org_id == org_id)
        page = paginate(s, query, ContractRow.id, limit=limit, after=after)
        s.expunge_all()
        return page


# -- credit grants ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantView:
    grant: CreditGrantRow
    balance: Decimal  # left after finalized invoices


def grant_credit(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    org_id: str,
    amount: Decimal,
    priority: int = 0,
    expires_at: datetime | None = None,
    paid: bool = False,
    currency: str = "USD",
    note: str | None = None,
) -> CreditGrantRow:
    """Grant credit to an org (operator admins): 404 unknown org, 422 a non-positive amount,
    a negative priority or an expiry in the past."""
    principal.require_operator(write=True)
    _positive(amount, "amount")
    if priority < 0:
        raise ValidationFailed(
            "priority is zero or more", code="invalid_priority", param="priority"
        )
    now = clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed(
            "a credit grant cannot expire in the past", code="invalid_dates", param="expires_at"
        )
    with db.transaction() as s:
        _check_org(s, org_id)
        row = CreditGrantRow(
            id=new_id("cred", at=now),
            org_id=org_id,
            amount=amount,
            currency=currency,
            priority=priority,
            expires_at=expires_at,
            paid=paid,
            note=note,
            created_by=principal.key_id,
            created_at=now,
        )
        s.add(row)
        s.flush()
        s.expunge(row)
        return row


def _used(
    s: Session, reference_ids: Sequence[str], kind: str, org_id: str | None = None
) -> dict[str, Decimal]:
    """How much of each contract or grant finalized invoices already drew (lines are
    negative), less what credit notes gave back to it (``restored`` lines)."""
    if not reference_ids:
        return {}
    back = restored(s, reference_ids, org_id)
    query = (
        sa.select(InvoiceLineRow.reference_id, sa.func.sum(InvoiceLineRow.amount))
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.state == FINALIZED,
            InvoiceLineRow.kind == kind,
            InvoiceLineRow.reference_id.in_(list(reference_ids)),
        )
        .group_by(InvoiceLineRow.reference_id)
    )
    used = {str(ref): -Decimal(total) for ref, total in s.execute(query)}
    return {ref: amount - back.get(ref, Decimal(0)) for ref, amount in used.items()}


RESTORED = "restored"


def restored(
    s: Session, reference_ids: Sequence[str], org_id: str | None = None
) -> dict[str, Decimal]:
    """What credit notes put back on each grant or prepaid contract (their ``restored``
    lines), so that lowering an invoice paid by credit never turns that credit into cash."""
    query = sa.select(CreditNoteRow.lines)
    if org_id is not None:
        query = query.where(CreditNoteRow.org_id == org_id)
    wanted = set(reference_ids)
    out: dict[str, Decimal] = {}
    for lines in s.scalars(query):
        for ln in lines:
            ref = ln.get("reference_id")
            if ln.get("kind") == RESTORED and ref in wanted:
                out[ref] = out.get(ref, Decimal(0)) + Decimal(ln["amount"])
    return out


def list_credits(
    *, db: Database, principal: Principal, org_id: str, limit: int, after: str | None
) -> tuple[list[GrantView], Page[CreditGrantRow]]:
    """An org's grants with what is left of each (after finalized invoices)."""
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        query = sa.select(CreditGrantRow).where(CreditGrantRow.org_id == org_id)
        page = paginate(s, query, CreditGrantRow.id, limit=limit, after=after)
        used = _used(s, [g.id for g in page.items], CREDIT, org_id)
        s.expunge_all()
    views = [GrantView(g, g.amount - used.get(g.id, Decimal(0))) for g in page.items]
    return views, page


# -- invoice lines from agreements ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    """A line an agreement puts on an invoice; ``reference_id`` is the contract or grant."""

    kind: str
    usage_period: str
    sku: str
    amount: Decimal
    reference_id: str
    fact_ids: tuple[str, ...] = ()
    gpu_seconds: Decimal = Decimal(0)
    unit_price: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Spend:
    """A line already on the invoice: SKU code (``MODEL.class[.term]``, ``tokens.…``) and
    amount; ``current`` is False for adjustments of earlier months."""

    sku: str
    amount: Decimal
    current: bool = True


def _active(
    s: Session, org_id: str, kinds: Sequence[str], start: datetime, end: datetime
) -> list[ContractRow]:
    query = (
        sa.select(ContractRow)
        .where(
            ContractRow.org_id == org_id,
            ContractRow.kind.in_(list(kinds)),
            ContractRow.start_at < end,
            ContractRow.end_at > start,
        )
        .order_by(ContractRow.start_at, ContractRow.id)
    )
    return list(s.scalars(query))


def _name(period: Period) -> str:
    return period.start.strftime("%Y-%m")


def _reservation_charges(
    s: Session, c: ContractRow, period: Period, now: datetime, rounding: str
) -> list[Charge]:
    name = _name(period)
    term = c.term or "1m"
    sku = Sku(c.gpu_model or "", RESERVED, term)
    out: list[Charge] = []
    charged_from, charged_to = c.start_at, c.end_at
    if _cancelled(s, c):
        charged_to = charged_from  # cancelled before it started: nothing to charge
    elif c.billing == UPFRONT:
        if not period.start <= c.start_at < period.end:
            charged_to = charged_from  # charged once, in the month it starts
        book = price_book_at(s, c.start_at)
    else:
        charged_from, charged_to = max(c.start_at, period.start), min(c.end_at, period.end)
        book = price_book_at(s, period.start)
    if charged_to > charged_from:
        unit = book.price(sku)
        gpus = c.gpus or 0
        exact = gpu_hours_value(gpus, unit, charged_from, charged_to)
        secs = overlap(charged_from, charged_to, Period(charged_from, charged_to)) * gpus
        facts = (c.reservation_id,) if c.reservation_id else ()
        out.append(
            Charge(
                RESERVATION_CHARGE,
                name,
                sku.code,
                round_line(exact, rounding),
                c.id,
                facts,
                secs,
                unit,
            )
        )
    # The reservation's GPU time this month is paid by the charge: take it off again, but only
    # inside the contract's dates. Compute may extend a reservation past them (a self-service
    # extension, bought at its own quote); that time stays on the usage lines.
    intervals = [
        replace(iv, start=max(iv.start, c.start_at), end=min(iv.end or c.end_at, c.end_at))
        for iv in load_intervals(s, c.org_id, period)
        if iv.reservation_id == c.reservation_id
        and iv.start < c.end_at
        and (iv.end is None or iv.end > c.start_at)
    ]
    if intervals and c.reservation_id:
        outages = load_outages(s, {iv.node_id for iv in intervals}, period.end)
        # Rated as the usage lines rate it (a reservation's GPU time at the default term), so
        # the two cancel out; the charge above is at the contract's term.
        lines = rate(
            intervals,
            price_books_during(s, period),  # as the usage lines price it
            (),
            period,
            outages=outages,
            as_of=now,
            by_project=False,
            rounding=rounding,
        )
        for ln in lines:
            out.append(
                Charge(
                    RESERVED_USAGE,
                    name,
                    ln.sku.code,
                    -ln.amount.amount,
                    c.id,
                    ln.fact_ids,
                    -ln.gpu_seconds,
                    ln.unit_price,
                )
            )
    return out


CANCELLED = "cancelled"


def _cancelled(s: Session, c: ContractRow) -> bool:
    """Compute cancels a reservation only before it starts: then it is never charged."""
    rsv = s.get(ReservationRow, c.reservation_id) if c.reservation_id else None
    return rsv is not None and rsv.state == CANCELLED


def _model_of(sku: str) -> str:
    return sku.split(".", 1)[0]


def agreement_charges(
    s: Session,
    org_id: str,
    period: Period,
    spend: Sequence[Spend],
    *,
    now: datetime,
    rounding: str = ROUND_HALF_UP,
    currency: str = "USD",
    settle: bool = True,
) -> list[Charge]:
    """The lines ``org_id``'s agreements add to its invoice for ``period``, given the lines
    already on it (``spend``). Credits are applied to what is due after everything else.
    ``settle`` False stops after the true-ups (the lines that depend on the month's facts only,
    which re-rating a closed month compares with what was billed)."""
    name = _name(period)
    out: list[Charge] = []
    for c in _active(s, org_id, [RESERVATION], period.start, period.end):
        out += _reservation_charges(s, c, period, now, rounding)
    current = [(sp.sku, sp.amount) for sp in spend if sp.current]
    current += [(ch.sku, ch.amount) for ch in out]
    # Take-or-pay: the committed amount for the month, less what was spent, if short.
    for c in _active(s, org_id, [COMMIT_SPEND, COMMIT_CAPACITY], period.start, period.end):
        if c.kind == COMMIT_SPEND:
            committed = prorated(c.amount or Decimal(0), c.start_at, c.end_at, period)
            used = sum((a for _, a in current), Decimal(0))
        else:
            lo, hi = max(c.start_at, period.start), min(c.end_at, period.end)
            committed = gpu_hours_value(c.gpus or 0, c.rate or Decimal(0), lo, hi)
            used = sum(
                (a for sku, a in current if c.gpu_model in (None, _model_of(sku))), Decimal(0)
            )
        month = round_line(committed, rounding)  # the line's unit price: this month's commitment
        short = true_up(Money(month, currency), Money(used, currency))
        if short.amount > 0:
            out.append(Charge(TRUE_UP, name, c.kind, short.amount, c.id, (), Decimal(0), month))
    if not settle:
        return out
    # Prepaid: the prepayment is billed in the month it starts, then pays usage until used up.
    prepaid = _active(s, org_id, [PREPAID], period.start, period.end)
    for c in prepaid:
        if period.start <= c.start_at < period.end:
            amount = round_line(c.amount or Decimal(0), rounding)
            out.append(Charge(PREPAYMENT, name, PREPAID, amount, c.id))
    consumption = sum((sp.amount for sp in spend), Decimal(0)) + sum(
        (ch.amount for ch in out if ch.kind != PREPAYMENT), Decimal(0)
    )
    drawn_before = _used(s, [c.id for c in prepaid], DRAWDOWN, org_id)
    for c in prepaid:
        if consumption <= 0:
            break
        balance = (c.amount or Decimal(0)) - drawn_before.get(c.id, Decimal(0))
        take = min(balance, consumption)
        if take > 0:
            out.append(Charge(DRAWDOWN, name, PREPAID, -take, c.id))
            consumption -= take
    # Credits pay what is due for the month's consumption, not a prepayment (a purchase).
    due = sum((sp.amount for sp in spend), Decimal(0)) + sum(
        (ch.amount for ch in out if ch.kind != PREPAYMENT), Decimal(0)
    )
    out += _credits(s, org_id, period, due, currency)
    return out


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
        rated = rate_org_period(s, org_id, period, now, rounding=rounding)
        preview = InvoicePreview(
            org_id,
            period,
            rated.price_book_id,
            rated.currency,
            rated.lines,
            min(now, period.end),
            rated.token_lines,
        )
        spend = [Spend(ln.sku.code, ln.amount.amount) for ln in rated.invoice_lines()]
        charges = agreement_charges(
            s, org_id, period, spend, now=now, rounding=rounding, currency=rated.currency
        )
    return preview, charges


def _credits(s: Session, org_id: str, period: Period, due: Decimal, currency: str) -> list[Charge]:
    if due <= 0:
        return []  # never pay out credit: a negative total stays a balance owed to the org
    rows = list(
        s.scalars(
            sa.select(CreditGrantRow).where(
                CreditGrantRow.org_id == org_id, CreditGrantRow.currency == currency
            )
        )
    )
    used = _used(s, [g.id for g in rows], CREDIT, org_id)
    grants = [
        Grant(
            g.id,
            Money(g.amount - used.get(g.id, Decimal(0)), currency),
            g.priority,
            g.expires_at,
            g.paid,
        )
        for g in rows
    ]
    # A grant pays a month's invoice if it is still live at the month's last instant.
    at = period.end - timedelta(microseconds=1)
    applied = apply_credits(Money(due, currency), grants, at)
    name = _name(period)
    return [
        Charge(
            CREDIT,
            name,
            "credit.paid" if _paid(rows, gid) else "credit.promotional",
            -round_line(m.amount),
            gid,
        )
        for gid, m in applied.applied
    ]


def _paid(rows: Sequence[CreditGrantRow], grant_id: str) -> bool:
    return any(g.paid for g in rows if g.id == grant_id)


# -- what reports read -------------------------------------------------------------------------


def backlog_by_org(s: Session, at: datetime) -> dict[str, Decimal]:
    """Remaining contracted value per org at ``at`` (rounded to the cent): committed spend and
    committed capacity still to come (partial months prorated), prepaid balance not yet drawn
    by finalized invoices, and reservation charges not yet due (monthly: the rest of the term;
    upfront: the whole charge if it starts after ``at``). Backstops are contingent (they pay
    only for unsold capacity) and are not backlog; see ``backstop_revenue``."""
    contracts = list(
        s.scalars(
            sa.select(ContractRow)
            .where(ContractRow.end_at > at, ContractRow.kind != BACKSTOP)
            .order_by(ContractRow.id)
        )
    )
    drawn = _used(s, [c.id for c in contracts if c.kind == PREPAID], DRAWDOWN)
    out: dict[str, Decimal] = {}
    for c in contracts:
        lo = max(at, c.start_at)
        if c.kind == COMMIT_SPEND:
            value = monthly_value(c.amount or Decimal(0), lo, c.end_at)
        elif c.kind == COMMIT_CAPACITY:
            value = gpu_hours_value(c.gpus or 0, c.rate or Decimal(0), lo, c.end_at)
        elif c.kind == PREPAID:
            value = max((c.amount or Decimal(0)) - drawn.get(c.id, Decimal(0)), Decimal(0))
        else:
            if (c.billing == UPFRONT and c.start_at <= at) or _cancelled(s, c):
                continue
            book = price_book_at(s, c.start_at if c.billing == UPFRONT else lo)
            unit = book.price(Sku(c.gpu_model or "", RESERVED, c.term or "1m"))
            value = gpu_hours_value(
                c.gpus or 0, unit, c.start_at if c.billing == UPFRONT else lo, c.end_at
            )
        out[c.org_id] = out.get(c.org_id, Decimal(0)) + value
    return {org: round_line(v) for org, v in sorted(out.items())}


@dataclass(frozen=True, slots=True)
class BackstopRevenue:
    contract_id: str
    org_id: str
    counterparty: str | None
    gpu_model: str
    committed_gpu_hours: Decimal
    sold_gpu_hours: Decimal
    amount: Decimal  # what the counterparty owes for the unsold part


def backstop_revenue(s: Session, period: Period, *, now: datetime) -> list[BackstopRevenue]:
    """Operator revenue from backstop agreements for ``period``: for each, the counterparty pays
    its rate for the committed GPU-hours of its GPU model that no tenant bought (sold hours
    are all orgs' billable GPU-hours of that model, failed time excluded)."""
    rows = list(
        s.scalars(
            sa.select(ContractRow)
            .where(
                ContractRow.kind == BACKSTOP,
                ContractRow.start_at < period.end,
                ContractRow.end_at > period.start,
            )
            .order_by(ContractRow.id)
        )
    )
    out = []
    for c in rows:
        lo, hi = max(c.start_at, period.start), min(c.end_at, period.end, max(now, period.start))
        if hi <= lo:
            continue
        window = Period(lo, hi)
        sold = _sold_gpu_hours(s, c.gpu_model or "", window)
        hours = overlap(lo, hi, window) / Decimal(3600)
        amount = backstop(c.gpus or 0, sold, hours, Money(c.rate or Decimal(0), c.currency))
        out.append(
            BackstopRevenue(
                c.id,
                c.org_id,
                c.counterparty,
                c.gpu_model or "",
                Decimal(c.gpus or 0) * hours,
                sold,
                amount.amount,
            )
        )
    return out


def _sold_gpu_hours(s: Session, gpu_model: str, window: Period) -> Decimal:
    intervals = [iv for iv in load_intervals(s, None, window) if iv.gpu_model == gpu_model]
    outages = load_outages(s, {iv.node_id for iv in intervals}, window.end)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for o in outages:
        spans.setdefault(o.node_id, []).append((o.start, o.end or window.end))
    merged = {node: merge_spans(v) for node, v in spans.items()}
    total = Decimal(0)
    for iv in intervals:
        secs = billable_seconds(iv, merged.get(iv.node_id, []), window.start, window.end)
        total += secs * iv.gpus
    return total / Decimal(3600)
