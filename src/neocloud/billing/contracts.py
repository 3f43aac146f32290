"""Contracts and credits, pure: take-or-pay true-ups, prepaid drawdown, backstops, and the
order in which credit grants pay an invoice. Plain data in, plain data out; money is
``Decimal`` (``Money``), never float.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from neocloud.kernel.money import Money


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
