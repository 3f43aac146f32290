"""The lines an org's agreements put on its invoice for a month: reservation charges (and the
usage they already pay for, taken back off), take-or-pay true-ups, prepaid charges and
drawdowns, and credits.

The money rules are pure (``billing.contracts``); this module loads the agreements and the
facts they need. Line order on an invoice: usage (and adjustments) first, then per reservation
contract its charge and the usage it already covers (negative), true-ups, prepaid charges and
drawdowns, credits last, applied to what is still due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing import ledger
from neocloud.billing.adjustments import period_name
from neocloud.billing.contracts import (
    Charge,
    Spend,
    gpu_hours_value,
    overlap,
    prorated,
    round_line,
    true_up,
)
from neocloud.billing.credits import credit_charges
from neocloud.billing.kinds import ContractKind, LineKind, ReservationBilling
from neocloud.billing.rating import RESERVED, Period, Sku, rate
from neocloud.billing.service import (
    load_intervals,
    load_outages,
    price_book_at,
    price_books_during,
)
from neocloud.billing.tables import ContractRow
from neocloud.compute.domain import ReservationState
from neocloud.compute.tables import ReservationRow
from neocloud.kernel.money import Money


def _active(
    s: Session, org_id: str, kinds: Sequence[ContractKind], start: datetime, end: datetime
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


def _reservation_charges(
    s: Session, c: ContractRow, period: Period, now: datetime, rounding: str
) -> list[Charge]:
    name = period_name(period)
    term = c.term or "1m"
    sku = Sku(c.gpu_model or "", RESERVED, term)
    out: list[Charge] = []
    charged_from, charged_to = c.start_at, c.end_at
    if is_cancelled(s, c):
        charged_to = charged_from  # cancelled before it started: nothing to charge
    elif c.billing == ReservationBilling.UPFRONT:
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
                LineKind.RESERVATION,
                name,
                sku.code,
                round_line(exact, rounding),
                c.id,
                facts,
                secs,
                unit,
            )
        )
    out += _reserved_usage(s, c, period, now, rounding)
    return out


def _reserved_usage(
    s: Session, c: ContractRow, period: Period, now: datetime, rounding: str
) -> list[Charge]:
    """The reservation's GPU time this month is paid by the charge: take it off again, but only
    inside the contract's dates. Compute may extend a reservation past them (a self-service
    extension, bought at its own quote); that time stays on the usage lines."""
    intervals = [
        replace(iv, start=max(iv.start, c.start_at), end=min(iv.end or c.end_at, c.end_at))
        for iv in load_intervals(s, c.org_id, period)
        if iv.reservation_id == c.reservation_id
        and iv.start < c.end_at
        and (iv.end is None or iv.end > c.start_at)
    ]
    if not (intervals and c.reservation_id):
        return []
    outages = load_outages(s, {iv.node_id for iv in intervals}, period.end)
    # Rated as the usage lines rate it (a reservation's GPU time at the default term), so
    # the two cancel out; the charge is at the contract's term.
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
    name = period_name(period)
    return [
        Charge(
            LineKind.RESERVED_USAGE,
            name,
            ln.sku.code,
            -ln.amount.amount,
            c.id,
            ln.fact_ids,
            -ln.gpu_seconds,
            ln.unit_price,
        )
        for ln in lines
    ]


def is_cancelled(s: Session, c: ContractRow) -> bool:
    """Whether compute cancelled the contract's reservation: it cancels one only before it
    starts, and then it is never charged."""
    rsv = s.get(ReservationRow, c.reservation_id) if c.reservation_id else None
    return rsv is not None and rsv.state == ReservationState.CANCELLED


def _model_of(sku: str) -> str:
    return sku.split(".", 1)[0]


def _true_ups(
    s: Session,
    org_id: str,
    period: Period,
    current: Sequence[tuple[str, Decimal]],
    rounding: str,
    currency: str,
) -> list[Charge]:
    """Take-or-pay: the committed amount for the month, less what was spent (``current``:
    SKU and amount of this month's lines), if short."""
    commitments = [ContractKind.COMMIT_SPEND, ContractKind.COMMIT_CAPACITY]
    out = []
    for c in _active(s, org_id, commitments, period.start, period.end):
        if c.kind == ContractKind.COMMIT_SPEND:
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
            out.append(
                Charge(
                    LineKind.TRUE_UP,
                    period_name(period),
                    c.kind,
                    short.amount,
                    c.id,
                    (),
                    Decimal(0),
                    month,
                )
            )
    return out


def _prepaid(
    s: Session, org_id: str, period: Period, consumed: Decimal, rounding: str
) -> list[Charge]:
    """Prepaid: the prepayment is billed in the month it starts, then pays usage (what the
    month ``consumed`` besides prepayments) until used up."""
    name = period_name(period)
    prepaid = _active(s, org_id, [ContractKind.PREPAID], period.start, period.end)
    out = []
    for c in prepaid:
        if period.start <= c.start_at < period.end:
            amount = round_line(c.amount or Decimal(0), rounding)
            out.append(Charge(LineKind.PREPAYMENT, name, ContractKind.PREPAID, amount, c.id))
    drawn_before = ledger.drawn(s, [c.id for c in prepaid], LineKind.DRAWDOWN, org_id)
    for c in prepaid:
        if consumed <= 0:
            break
        balance = (c.amount or Decimal(0)) - drawn_before.get(c.id, Decimal(0))
        take = min(balance, consumed)
        if take > 0:
            out.append(Charge(LineKind.DRAWDOWN, name, ContractKind.PREPAID, -take, c.id))
            consumed -= take
    return out


def _consumed(spend: Sequence[Spend], charges: Sequence[Charge]) -> Decimal:
    """What the invoice's lines come to, prepayments (a purchase, not consumption) aside."""
    return sum((sp.amount for sp in spend), Decimal(0)) + sum(
        (ch.amount for ch in charges if ch.kind != LineKind.PREPAYMENT), Decimal(0)
    )


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
    out: list[Charge] = []
    for c in _active(s, org_id, [ContractKind.RESERVATION], period.start, period.end):
        out += _reservation_charges(s, c, period, now, rounding)
    current = [(sp.sku, sp.amount) for sp in spend if sp.current]
    current += [(ch.sku, ch.amount) for ch in out]
    out += _true_ups(s, org_id, period, current, rounding, currency)
    if not settle:
        return out
    out += _prepaid(s, org_id, period, _consumed(spend, out), rounding)
    # Credits pay what is due for the month's consumption, not a prepayment (a purchase).
    out += credit_charges(s, org_id, period, _consumed(spend, out), currency)
    return out
