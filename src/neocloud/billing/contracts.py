"""Contracts and credits, pure: take-or-pay true-ups, prepaid drawdown, backstops, the
order in which credit grants pay an invoice, and the lines agreements put on an invoice
(``Charge``). Plain data in, plain data out; money is ``Decimal`` (``Money``), never float.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from neocloud.billing.kinds import LineKind
from neocloud.billing.rating import Period, seconds
from neocloud.kernel.money import Money, quantize_amount

_CENT = Decimal("0.01")
_HOUR = Decimal(3600)
_PRECISION = 60


@dataclass(frozen=True, slots=True)
class Charge:
    """A line an agreement puts on an invoice; ``reference_id`` is the contract or grant."""

    kind: LineKind
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


def true_up(commitment: Money, usage: Money) -> Money:
    """Take-or-pay: what a period's committed spend adds on top of its usage (never negative).

    ``true_up(100,000.00, 82,345.67) == 17,654.33``.
    """
    short = commitment - usage
    return short if short.amount > 0 else Money.zero(commitment.currency)


@dataclass(frozen=True, slots=True)
class Drawdown:
    drawn: Money  # paid from the prepaid balance
    overage: Money  # billed on top
    balance: Money  # left for later periods


def draw_down(balance: Money, usage: Money) -> Drawdown:
    """A prepaid commitment pays usage until it is used up; the rest is overage."""
    drawn = usage if usage <= balance else balance
    if drawn.amount < 0:
        drawn = Money.zero(usage.currency)
    return Drawdown(drawn, usage - drawn, balance - drawn)


def backstop(
    committed_gpus: int, sold_gpu_hours: Decimal, hours: Decimal, rate_per_gpu_hour: Money
) -> Money:
    """A backstop agreement: the third party pays ``rate_per_gpu_hour`` for capacity of the
    committed block that went unsold in the period (operator revenue, not a tenant charge)."""
    unsold = max(Decimal(committed_gpus) * hours - sold_gpu_hours, Decimal(0))
    return (rate_per_gpu_hour * unsold).rounded()


@dataclass(frozen=True, slots=True)
class Grant:
    """A credit grant: ``balance`` left, applied lowest ``priority`` first, then earliest expiry;
    ``paid`` credit (bought) may be refunded, promotional credit never."""

    id: str
    balance: Money
    priority: int
    expires_at: datetime | None
    paid: bool


# The SKU of a credit line says which kind of grant paid it.
PAID_CREDIT, PROMOTIONAL_CREDIT = "credit.paid", "credit.promotional"


@dataclass(frozen=True, slots=True)
class Application:
    applied: tuple[tuple[str, Money], ...]  # (grant id, amount), in the order applied
    due: Money  # left to pay after credits


def apply_credits(amount_due: Money, grants: Iterable[Grant], at: datetime) -> Application:
    """Pay ``amount_due`` from live grants (not expired at ``at``) by priority, then earliest
    expiry (no expiry last), then id. Nothing is applied to a zero or negative amount: a
    credit note never turns promotional credit into a refund."""
    live = [
        g for g in grants if g.balance.amount > 0 and (g.expires_at is None or g.expires_at > at)
    ]
    live.sort(key=lambda g: (g.priority, g.expires_at is None, g.expires_at or at, g.id))
    due = amount_due
    applied = []
    for g in live:
        if due.amount <= 0:
            break
        take = g.balance if g.balance <= due else due
        applied.append((g.id, take))
        due = due - take
    return Application(tuple(applied), due)


def refundable(grants: Iterable[Grant], at: datetime, currency: str = "USD") -> Money:
    """What may be paid back in cash: the live balance of paid grants only."""
    out = Money.zero(currency)
    for g in grants:
        if g.paid and (g.expires_at is None or g.expires_at > at):
            out += g.balance
    return out


# -- time: monthly commitments over contracts of any length ---------------------------------


def overlap(start: datetime, end: datetime, period: Period) -> Decimal:
    """Seconds of ``[start, end)`` inside ``period`` (0 when they do not meet)."""
    lo, hi = max(start, period.start), min(end, period.end)
    return seconds(hi - lo) if hi > lo else Decimal(0)


def months(start: datetime, end: datetime) -> Iterator[Period]:
    """The calendar months that ``[start, end)`` touches, in order."""
    if end <= start:
        return
    period = Period.month(start.strftime("%Y-%m"))
    while period.start < end:
        yield period
        period = Period.month(period.end.strftime("%Y-%m"))


def prorated(per_month: Decimal, start: datetime, end: datetime, period: Period) -> Decimal:
    """A monthly amount for the part of ``period`` that ``[start, end)`` covers (exact, not
    rounded): a whole month is the whole amount, half of it half."""
    covered = overlap(start, end, period)
    if covered == 0:
        return Decimal(0)
    ctx = decimal.Context(prec=_PRECISION)
    return ctx.divide(ctx.multiply(per_month, covered), seconds(period.end - period.start))


def monthly_value(per_month: Decimal, start: datetime, end: datetime) -> Decimal:
    """What a monthly commitment is worth over ``[start, end)`` (partial months prorated)."""
    return sum((prorated(per_month, start, end, p) for p in months(start, end)), Decimal(0))


def gpu_hours_value(gpus: int, rate: Decimal, start: datetime, end: datetime) -> Decimal:
    """``gpus`` x hours of ``[start, end)`` x ``rate`` per GPU-hour (exact)."""
    if end <= start:
        return Decimal(0)
    ctx = decimal.Context(prec=_PRECISION)
    return ctx.divide(ctx.multiply(ctx.multiply(Decimal(gpus), rate), seconds(end - start)), _HOUR)


def round_line(amount: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Round once, to the cent, as every invoice line is (``AmountOutOfRange`` if it cannot)."""
    return quantize_amount(amount, _CENT, rounding)
