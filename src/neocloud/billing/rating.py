"""Rating: a pure function of (facts, price book, contracts, period) → invoice lines.

No I/O, no clock, no database: plain data in, plain data out, so rating a period twice gives
identical lines and an invoice can always be re-derived from the facts.

Units: times are timezone-aware UTC ``datetime``; GPU time is counted in exact seconds (to the
microsecond, as ``Decimal``); prices are per GPU-hour; money is ``Decimal``, rounded once per line.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from neocloud.kernel.money import Money

_HOUR = Decimal(3600)
_CENT = Decimal("0.01")
# Intermediate precision for a line's amount: far beyond any realistic quantity, and fixed here
# so the result never depends on the caller's decimal context.
_PRECISION = 60

ON_DEMAND, SPOT, RESERVED = "on_demand", "spot", "reserved"
# Reserved capacity is priced by its term; a reservation without a contract is a 1-month one.
TERMS = ("1m", "1y")
DEFAULT_TERM = "1m"


@dataclass(frozen=True, slots=True)
class Interval:
    """An allocation fact: ``gpus`` GPUs of ``gpu_model`` on ``node_id`` for ``[start, end)``.

    ``end`` None is still running (it runs to the period's end or ``as_of``).
    """

    id: str
    org_id: str
    project_id: str | None
    node_id: str
    gpu_model: str
    cls: str
    gpus: int
    start: datetime
    end: datetime | None
    reservation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """``node_id`` was failed during ``[start, end)`` (``end`` None: not repaired yet)."""

    node_id: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class Sku:
    """What a GPU-hour is sold as: a GPU model in a capacity class (reserved: with a term)."""

    gpu_model: str
    cls: str
    term: str | None = None

    @property
    def code(self) -> str:
        """``H100-SXM-80GB.reserved.1y``: stable, used on lines and in CSV exports."""
        parts = [self.gpu_model, self.cls] + ([self.term] if self.term else [])
        return ".".join(parts)


@dataclass(frozen=True, slots=True)
class PriceBook:
    """One version of the price book: price per GPU-hour for each SKU."""

    version: str
    gpu_hour: Mapping[Sku, Decimal]
    currency: str = "USD"

    def price(self, sku: Sku) -> Decimal:
        try:
            return self.gpu_hour[sku]
        except KeyError:
            raise LookupError(f"price book {self.version} has no price for {sku.code}") from None


@dataclass(frozen=True, slots=True)
class ReservedContract:
    """Prices a reservation's GPU time at a term (``1m``, ``1y``) of the price book."""

    reservation_id: str
    term: str


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in UTC; ``Period.month("2026-11")`` is a calendar month."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("a period ends after it starts")

    @classmethod
    def month(cls, text: str) -> Period:
        try:
            year, month = (int(p) for p in text.split("-"))
            start = datetime(year, month, 1, tzinfo=UTC)
        except ValueError:
            raise ValueError(f"period must be YYYY-MM, not {text!r}") from None
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
        return cls(start, end)


@dataclass(frozen=True, slots=True)
class Line:
    """One invoice line: GPU time of one SKU for one org (and project), and the facts it prices."""

    org_id: str
    project_id: str | None
    sku: Sku
    gpu_seconds: Decimal
    unit_price: Decimal  # per GPU-hour
    amount: Money  # rounded once
    fact_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpu_hours(self) -> Decimal:
        return self.gpu_seconds / _HOUR


def seconds(delta: timedelta) -> Decimal:
    """A ``timedelta`` as exact ``Decimal`` seconds (microsecond resolution, no float)."""
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


def _merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def billable_seconds(
    interval: Interval, outages: Sequence[tuple[datetime, datetime]], start: datetime, end: datetime
) -> Decimal:
    """Seconds of ``interval`` inside ``[start, end)`` not covered by ``outages`` (merged spans
    of its node), per GPU (multiply by ``interval.gpus`` for GPU-seconds)."""
    lo = max(interval.start, start)
    hi = end if interval.end is None else min(interval.end, end)
    if hi <= lo:
        return Decimal(0)
    total = seconds(hi - lo)
    for o_start, o_end in outages:
        a, b = max(lo, o_start), min(hi, o_end)
        if b > a:
            total -= seconds(b - a)
    return total


def _dedupe(intervals: Iterable[Interval]) -> list[Interval]:
    """The same fact fed twice is one fact; two different facts under one id are an error."""
    seen: dict[str, Interval] = {}
    for iv in intervals:
        known = seen.get(iv.id)
        if known is None:
            seen[iv.id] = iv
        elif known != iv:
            raise ValueError(f"conflicting facts under one id {iv.id}")
    return list(seen.values())


def sku_of(interval: Interval, terms: Mapping[str, str]) -> Sku:
    if interval.cls != RESERVED:
        return Sku(interval.gpu_model, interval.cls)
    term = terms.get(interval.reservation_id or "", DEFAULT_TERM)
    return Sku(interval.gpu_model, RESERVED, term)


def rate(
    intervals: Iterable[Interval],
    price_book: PriceBook,
    contracts: Iterable[ReservedContract],
    period: Period,
    *,
    outages: Iterable[Outage] = (),
    as_of: datetime | None = None,
    by_project: bool = True,
    rounding: str = ROUND_HALF_UP,
    quantum: Decimal = _CENT,
) -> tuple[Line, ...]:
    """Price GPU time of ``intervals`` inside ``period`` (up to ``as_of`` for open intervals and
    outages), excluding time their node was failed.

    One line per (org, project if ``by_project``, SKU), sorted, each rounded once with
    ``rounding`` to ``quantum``; lines with no billable time are left out.
    """
    end = period.end if as_of is None else max(period.start, min(period.end, as_of))
    terms = {c.reservation_id: c.term for c in contracts}
    failed: dict[str, list[tuple[datetime, datetime]]] = {}
    for o in outages:
        failed.setdefault(o.node_id, []).append((o.start, end if o.end is None else o.end))
    merged = {node: _merge(spans) for node, spans in failed.items()}

    groups: dict[tuple[str, str | None, Sku], tuple[Decimal, list[str]]] = {}
    for iv in _dedupe(intervals):
        secs = billable_seconds(iv, merged.get(iv.node_id, ()), period.start, end)
        if secs <= 0:
            continue
        key = (iv.org_id, iv.project_id if by_project else None, sku_of(iv, terms))
        total, ids = groups.get(key, (Decimal(0), []))
        ids.append(iv.id)
        groups[key] = (total + secs * iv.gpus, ids)

    lines = []
    ctx = decimal.Context(prec=_PRECISION)
    for (org_id, project_id, sku), (gpu_seconds, ids) in groups.items():
        unit = price_book.price(sku)
        exact = ctx.divide(ctx.multiply(gpu_seconds, unit), _HOUR)
        amount = Money(exact, price_book.currency).rounded(quantum, rounding)
        lines.append(Line(org_id, project_id, sku, gpu_seconds, unit, amount, tuple(sorted(ids))))
    lines.sort(key=lambda ln: (ln.org_id, ln.project_id or "", ln.sku.code))
    return tuple(lines)


def total(lines: Iterable[Line], currency: str = "USD") -> Money:
    """Sum of rounded line amounts (the invoice total: no rounding beyond the lines')."""
    out = Money.zero(currency)
    for line in lines:
        out += line.amount
    return out


# -- tokens (the Studio) ------------------------------------------------------------------------

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A usage event of type ``tokens``: one request's tokens of ``model`` (``batch``: the
    batch API, at the model's batch discount)."""

    id: str
    org_id: str
    model: str
    time: datetime
    input_tokens: int
    output_tokens: int
    batch: bool = False


@dataclass(frozen=True, slots=True)
class TokenRate:
    input_per_1m: Decimal
    output_per_1m: Decimal
    batch_discount: Decimal


@dataclass(frozen=True, slots=True)
class TokenLine:
    org_id: str
    model: str
    batch: bool
    input_tokens: int
    output_tokens: int
    amount: Money
    fact_ids: tuple[str, ...]


def rate_tokens(
    usage: Iterable[TokenUsage],
    prices: Mapping[str, TokenRate],
    period: Period,
    *,
    currency: str = "USD",
    rounding: str = ROUND_HALF_UP,
    quantum: Decimal = _CENT,
) -> tuple[TokenLine, ...]:
    """One line per (org, model, batch) of the events inside ``period``, each event counted
    once (by id), priced per 1M tokens and rounded once per line."""
    seen: dict[str, TokenUsage] = {}
    for u in usage:
        if period.start <= u.time < period.end:
            seen.setdefault(u.id, u)
    groups: dict[tuple[str, str, bool], list[TokenUsage]] = {}
    for u in seen.values():
        groups.setdefault((u.org_id, u.model, u.batch), []).append(u)
    lines = []
    ctx = decimal.Context(prec=_PRECISION)
    for (org_id, model, batch), items in sorted(groups.items()):
        try:
            price = prices[model]
        except KeyError:
            raise LookupError(f"no token price for model {model}") from None
        tokens_in = sum(u.input_tokens for u in items)
        tokens_out = sum(u.output_tokens for u in items)
        exact = ctx.divide(
            ctx.add(
                ctx.multiply(Decimal(tokens_in), price.input_per_1m),
                ctx.multiply(Decimal(tokens_out), price.output_per_1m),
            ),
            _MILLION,
        )
        if batch:
            exact = ctx.multiply(exact, 1 - price.batch_discount)
        amount = Money(exact, currency).rounded(quantum, rounding)
        ids = tuple(sorted(u.id for u in items))
        lines.append(TokenLine(org_id, model, batch, tokens_in, tokens_out, amount, ids))
    return tuple(lines)
