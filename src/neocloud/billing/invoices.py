"""Monthly invoices: a draft rebuilt from the facts on demand, then finalized and never changed.

Late facts for a finalized month are not written into it: the next draft carries an
``adjustment`` line per (SKU, project) with the difference between re-rating that month now and
what its finalized invoices (and credit notes) already billed; a difference that lowers the
bill is issued as a credit note on the finalized invoice instead. So every GPU-second is billed
exactly once.

Agreements (``billing.agreements``) add their lines after usage: reservation charges, true-ups,
prepaid drawdowns and credits. ``close_period`` is the automatic monthly run: drafts for every
org with activity, finalized once the grace period is over; one transaction per org, so a crash
in the middle leaves whole invoices behind and running it again finishes the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.agreements import (
    CREDIT,
    DRAWDOWN,
    RESERVATION_CHARGE,
    RESERVED_USAGE,
    RESTORED,
    TRUE_UP,
    Charge,
    Spend,
    agreement_charges,
)
from neocloud.billing.rating import Line, Period, TokenCounts
from neocloud.billing.service import rate_org_period
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
    reference_id: str | None = None
    # Token lines: the tokens and the prices per 1M applied (see ``InvoiceLineRow``).
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_price_per_1m: Decimal | None = None
    output_price_per_1m: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Billed:
    """What finalized invoices already billed for one (SKU, project) of a month (a token
    line's counts: None when it was stored without them)."""

    sku: str
    project_id: str | None
    gpu_seconds: Decimal
    amount: Decimal
    fact_ids: tuple[str, ...]
    input_tokens: int | None = None
    output_tokens: int | None = None


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
            None,
            *_token_fields(ln.tokens),
        )
        for ln in lines
    ]


_TokenFields = tuple[int | None, int | None, Decimal | None, Decimal | None]


def _token_fields(tokens: TokenCounts | None) -> _TokenFields:
    if tokens is None:
        return (None, None, None, None)
    prices = (_scale(tokens.input_per_1m), _scale(tokens.output_per_1m))
    return (tokens.input_tokens, tokens.output_tokens, *prices)


# A price per 1M as stored: at the column's scale (a batch price after its discount may have
# more digits), so both backends store and show the same value; amounts are rated unrounded.
_PRICE_SCALE = Decimal("0.000001")


def _scale(price: Decimal | None) -> Decimal | None:
    return None if price is None else price.quantize(_PRICE_SCALE, ROUND_HALF_UP)


def adjustment_lines(
    rerated: Iterable[Line], billed: Iterable[Billed], usage_period: str
) -> list[LineDraft]:
    """Pure: the difference between a month rated now and what was billed for it, one line per
    (SKU, project) that changed; its facts are those not billed before (or all it rates). A
    token line's adjustment carries the difference in tokens and the prices of the lines its
    new facts are on (None when those differ)."""
    new: dict[tuple[str, str | None], Line] = {}
    parts: dict[tuple[str, str | None], list[Line]] = {}
    for ln in rerated:  # a price change gives a SKU two lines: compare their sum
        key = (ln.sku.code, ln.project_id)
        seen = new.get(key)
        new[key] = ln if seen is None else _combined(seen, ln)
        parts.setdefault(key, []).append(ln)
    old: dict[tuple[str, str | None], tuple[Decimal, Decimal, set[str]]] = {}
    old_tokens: dict[tuple[str, str | None], tuple[int, int] | None] = {}
    for b in billed:
        key = (b.sku, b.project_id)
        secs, amount, ids = old.get(key, (Decimal(0), Decimal(0), set()))
        old[key] = (secs + b.gpu_seconds, amount + b.amount, ids | set(b.fact_ids))
        counted = old_tokens.get(key, (0, 0))
        if counted is None or b.input_tokens is None or b.output_tokens is None:
            old_tokens[key] = None  # stored without counts: the difference is unknown
        else:
            old_tokens[key] = (counted[0] + b.input_tokens, counted[1] + b.output_tokens)
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
        tokens: _TokenFields = (None, None, None, None)
        if line is not None and line.tokens is not None:
            tokens = _token_delta(line.tokens, old_tokens.get(key, (0, 0)), parts[key], facts)
        out.append(
            LineDraft(
                ADJUSTMENT,
                usage_period,
                key[0],
                key[1],
                d_secs,
                unit,
                d_amount,
                facts,
                None,
                *tokens,
            )
        )
    return out


def _token_delta(
    now: TokenCounts, billed: tuple[int, int] | None, lines: Sequence[Line], facts: Sequence[str]
) -> _TokenFields:
    """Tokens rated now less those billed (None when what was billed has no counts), priced
    as the lines that hold the new ``facts`` (all the key's lines when there are none); the
    prices are None where those lines' differ."""
    new = set(facts)
    holding = [ln for ln in lines if new & set(ln.fact_ids)] or list(lines)
    rates = {(ln.tokens.input_per_1m, ln.tokens.output_per_1m) for ln in holding if ln.tokens}
    p_in, p_out = (_scale(p) for p in rates.pop()) if len(rates) == 1 else (None, None)
    if billed is None:
        return (None, None, p_in, p_out)
    return (now.input_tokens - billed[0], now.output_tokens - billed[1], p_in, p_out)


def _combined(a: Line, b: Line) -> Line:
    ids = tuple(sorted(set(a.fact_ids) | set(b.fact_ids)))
    tokens = None
    if a.tokens is not None and b.tokens is not None:
        same = (a.tokens.input_per_1m, a.tokens.output_per_1m) == (
            b.tokens.input_per_1m,
            b.tokens.output_per_1m,
        )
        tokens = TokenCounts(
            a.tokens.input_tokens + b.tokens.input_tokens,
            a.tokens.output_tokens + b.tokens.output_tokens,
            a.tokens.input_per_1m if same else None,
            a.tokens.output_per_1m if same else None,
        )
    return replace(
        a,
        gpu_seconds=a.gpu_seconds + b.gpu_seconds,
        amount=a.amount + b.amount,
        fact_ids=ids,
        tokens=tokens,
    )


# Agreement lines that depend on a month's facts: re-rating a closed month compares them too.
FACT_KINDS = (RESERVATION_CHARGE, RESERVED_USAGE, TRUE_UP)
_Key = tuple[str, str, str]  # (kind, contract id, SKU)


def agreement_deltas(
    fresh: Iterable[Charge], billed: dict[_Key, tuple[Decimal, Decimal]], usage_period: str
) -> list[LineDraft]:
    """Pure: for a closed month, what its reservation, covered-usage and true-up lines come to
    now minus what was billed for them (one line per contract and SKU that changed): a late
    fact that a commitment already paid for is taken back off its true-up, not billed twice."""
    now: dict[_Key, tuple[Decimal, Decimal, Decimal, tuple[str, ...]]] = {}
    for ch in fresh:
        if ch.kind in FACT_KINDS:
            key = (ch.kind, ch.reference_id, ch.sku)
            amount, secs, _, facts = now.get(key, (Decimal(0), Decimal(0), Decimal(0), ()))
            now[key] = (
                amount + ch.amount,
                secs + ch.gpu_seconds,
                ch.unit_price,
                facts + ch.fact_ids,
            )
    out = []
    for key in sorted(set(now) | set(billed)):
        amount, secs, unit, facts = now.get(key, (Decimal(0), Decimal(0), Decimal(0), ()))
        was_amount, was_secs = billed.get(key, (Decimal(0), Decimal(0)))
        if amount == was_amount and secs == was_secs:
            continue
        kind, ref, sku = key
        out.append(
            LineDraft(
                kind,
                usage_period,
                sku,
                None,
                secs - was_secs,
                unit,
                amount - was_amount,
                facts,
                ref,
            )
        )
    return out


def _billed_agreements(
    s: Session, org_id: str, usage_period: str
) -> dict[_Key, tuple[Decimal, Decimal]]:
    """(amount, GPU-seconds) billed so far per (kind, contract, SKU) of ``FACT_KINDS`` for a
    month: on finalized invoices and on credit notes."""
    out: dict[_Key, tuple[Decimal, Decimal]] = {}

    def add(kind: str, ref: str | None, sku: str, amount: Decimal, secs: Decimal) -> None:
        key = (kind, ref or "", sku)
        a, g = out.get(key, (Decimal(0), Decimal(0)))
        out[key] = (a + amount, g + secs)

    query = (
        sa.select(InvoiceLineRow)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.org_id == org_id,
            InvoiceRow.state == FINALIZED,
            InvoiceLineRow.usage_period == usage_period,
            InvoiceLineRow.kind.in_(FACT_KINDS),
        )
    )
    for r in s.scalars(query):
        add(r.kind, r.reference_id, r.sku, r.amount, r.gpu_seconds)
    notes = sa.select(CreditNoteRow).where(
        CreditNoteRow.org_id == org_id, CreditNoteRow.usage_period == usage_period
    )
    for note in s.scalars(notes):
        for ln in note.lines:
            if ln["kind"] in FACT_KINDS:
                add(
                    ln["kind"],
                    ln.get("reference_id"),
                    ln["sku"],
                    Decimal(ln["amount"]),
                    Decimal(ln["gpu_seconds"]),
                )
    return out


def _billed(s: Session, org_id: str, usage_period: str) -> list[Billed]:
    """What finalized invoices and credit notes already billed for ``usage_period``'s usage."""
    query = (
        sa.select(InvoiceLineRow)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.org_id == org_id,
            InvoiceRow.state == FINALIZED,
            InvoiceLineRow.usage_period == usage_period,
            InvoiceLineRow.kind.in_([USAGE, ADJUSTMENT]),
        )
    )
    out = [
        Billed(
            r.sku,
            r.project_id,
            r.gpu_seconds,
            r.amount,
            tuple(r.fact_ids),
            r.input_tokens,
            r.output_tokens,
        )
        for r in s.scalars(query)
    ]
    notes = sa.select(CreditNoteRow).where(
        CreditNoteRow.org_id == org_id, CreditNoteRow.usage_period == usage_period
    )
    for note in s.scalars(notes):
        out += [
            Billed(
                ln["sku"],
                ln["project_id"],
                Decimal(ln["gpu_seconds"]),
                Decimal(ln["amount"]),
                tuple(ln["fact_ids"]),
                ln.get("input_tokens"),
                ln.get("output_tokens"),
            )
            for ln in note.lines
            if ln["kind"] == ADJUSTMENT
        ]
    return out


def _rate(
    s: Session, org_id: str, period: Period, now: datetime, rounding: str
) -> tuple[str, list[Line]]:
    rated = rate_org_period(s, org_id, period, now, rounding=rounding)  # GPU time and tokens
    return rated.price_book_id, rated.invoice_lines()


def _finalized(s: Session, org_id: str, name: str) -> InvoiceRow | None:
    query = sa.select(InvoiceRow).where(
        InvoiceRow.org_id == org_id, InvoiceRow.period == name, InvoiceRow.state == FINALIZED
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
            changes = adjustment_lines(rerated, _billed(s, org_id, name), name)
            spent = [Spend(ln.sku.code, ln.amount.amount) for ln in rerated]
            fresh = agreement_charges(
                s, org_id, earlier, spent, now=now, rounding=rounding, settle=False
            )
            changes += agreement_deltas(fresh, _billed_agreements(s, org_id, name), name)
            # What the month comes to now, less what it billed: more goes on this draft, less
            # is a credit note on the finalized invoice.
            if sum((d.amount for d in changes), Decimal(0)) >= 0:
                out.lines += changes
            else:
                out.credit_notes.append((final, changes))
    spend = [Spend(d.sku, d.amount, d.kind == USAGE) for d in out.lines]
    for ch in agreement_charges(s, org_id, period, spend, now=now, rounding=rounding):
        out.lines.append(
            LineDraft(
                ch.kind,
                ch.usage_period,
                ch.sku,
                None,
                ch.gpu_seconds,
                ch.unit_price,
                ch.amount,
                ch.fact_ids,
                ch.reference_id,
            )
        )
    return out


def _lock(s: Session, org_id: str, name: str) -> InvoiceRow | None:
    query = (
        sa.select(InvoiceRow)
        .where(InvoiceRow.org_id == org_id, InvoiceRow.period == name)
        .with_for_update()
    )
    return s.scalars(query).first()


def _line_json(d: LineDraft) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "usage_period": d.usage_period,
        "sku": d.sku,
        "project_id": d.project_id,
        "gpu_seconds": format(d.gpu_seconds, "f"),
        "unit_price": format(d.unit_price, "f"),
        "amount": format(d.amount, "f"),
        "fact_ids": list(d.fact_ids),
        "reference_id": d.reference_id,
        "input_tokens": d.input_tokens,
        "output_tokens": d.output_tokens,
        "input_price_per_1m": _text(d.input_price_per_1m),
        "output_price_per_1m": _text(d.output_price_per_1m),
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


# What a credit note gives back first: promotional credit (never cash), then paid credit,
# then the prepaid balance; only the rest is money owed back to the org.
_RESTORE_ORDER = {"credit.promotional": 0, "credit.paid": 1, "prepaid": 2}


def _restorations(s: Session, inv: InvoiceRow, value: Decimal) -> list[dict[str, Any]]:
    """``restored`` lines giving back up to ``value`` to the credit grants and prepaid
    contracts that paid ``inv`` (less what earlier credit notes on it gave back)."""
    paid_by = s.execute(
        sa.select(InvoiceLineRow.sku, InvoiceLineRow.reference_id, InvoiceLineRow.amount).where(
            InvoiceLineRow.invoice_id == inv.id,
            InvoiceLineRow.kind.in_([CREDIT, DRAWDOWN]),
        )
    ).all()
    given: dict[str, Decimal] = {}
    for note in s.scalars(sa.select(CreditNoteRow).where(CreditNoteRow.invoice_id == inv.id)):
        for ln in note.lines:
            if ln["kind"] == RESTORED:
                ref = ln["reference_id"]
                given[ref] = given.get(ref, Decimal(0)) + Decimal(ln["amount"])
    out = []
    for sku, ref, amount in sorted(paid_by, key=lambda r: (_RESTORE_ORDER.get(r[0], 3), r[1])):
        if value <= 0:
            break
        if ref is None:
            continue
        back = min(-Decimal(amount) - given.get(ref, Decimal(0)), value)
        if back > 0:
            out.append(
                {"kind": RESTORED, "sku": sku, "reference_id": ref, "amount": format(back, "f")}
            )
            given[ref] = given.get(ref, Decimal(0)) + back
            value -= back
    return out


def _issue_credit_notes(
    s: Session, notes: list[tuple[InvoiceRow, list[LineDraft]]], now: datetime
) -> None:
    """Late facts lowered a finalized month: a credit note on it (the finalized invoice stays
    as it was), counted as billed for that month from now on. What the invoice paid with
    credit or prepaid balance goes back there first; the note's total is what is owed back."""
    for inv, lines in notes:
        lowered = sum((d.amount for d in lines), Decimal(0))
        restores = _restorations(s, inv, -lowered)
        back = sum((Decimal(r["amount"]) for r in restores), Decimal(0))
        s.add(
            CreditNoteRow(
                id=new_id("cn", at=now),
                org_id=inv.org_id,
                invoice_id=inv.id,
                usage_period=inv.period,
                currency=inv.currency,
                total=lowered + back,
                lines=[_line_json(d) for d in lines] + restores,
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
    inv.total = sum((d.amount for d in drafts.lines), Decimal(0))
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
            state=DRAFT,
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
    if inv.state == DRAFT:
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
    inv.state = FINALIZED
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
        if inv.state != FINALIZED:
            _finalize(s, inv, now, grace, rounding)
        return inv.id


# -- the monthly run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloseResult:
    period: str
    drafts: tuple[str, ...]  # invoice ids left as drafts (grace period not over)
    finalized: tuple[str, ...]  # finalized by this run
    unchanged: tuple[str, ...]  # already finalized before this run


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
            ContractRow.kind != "backstop",
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
    test raise there) loses nothing and bills nothing twice when it runs again."""
    principal.require_operator(write=True)
    with db.transaction() as s:
        orgs = orgs_to_invoice(s, period)
    drafts, finalized, unchanged = [], [], []
    for org_id in orgs:
        now = clock.now()
        with db.transaction() as s:
            inv = _open(s, org_id, period, now)
            if inv.state == FINALIZED:
                unchanged.append(inv.id)
            elif now >= period.end + grace:
                _finalize(s, inv, now, grace, rounding)  # rates the draft once, then freezes it
                finalized.append(inv.id)
            else:
                _rebuild(s, inv, period, now, rounding)
                drafts.append(inv.id)
        if after_org is not None:
            after_org(org_id)
    return CloseResult(period_name(period), tuple(drafts), tuple(finalized), tuple(unchanged))


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
