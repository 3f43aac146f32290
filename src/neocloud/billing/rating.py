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
from typing import Any

from neocloud.kernel.money import Money

_HOUR = Decimal(3600)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
class TokenRate:
    """A model's token price: per 1M input and output tokens; the batch API at a discount."""

    input_per_1m: Decimal
    output_per_1m: Decimal
    batch_discount: Decimal


@dataclass(frozen=True, slots=True)
class PriceBook:
    """One version of the price book: price per GPU-hour for each SKU, token prices per model,
    in force from ``effective_from`` (None: since always) until the next version's."""

    version: str
    gpu_hour: Mapping[Sku, Decimal]
    currency: str = "USD"
    effective_from: datetime | None = None
    tokens: Mapping[str, TokenRate] = field(default_factory=dict)
    # Platform services (managed databases): price per hour or per GiB-month by SKU code
    # (``billing.metered``).
    services: Mapping[str, Decimal] = field(default_factory=dict)

    def price(self, sku: Sku) -> Decimal:
        try:
            return self.gpu_hour[sku]
        except KeyError:
            raise LookupError(f"price book {self.version} has no price for {sku.code}") from None


Books = PriceBook | Sequence[PriceBook]


def _versions(books: Books) -> list[PriceBook]:
    """The versions by ``effective_from`` (one without a date first); two in force from the
    same instant are an error."""
    versions = [books] if isinstance(books, PriceBook) else list(books)
    if not versions:
        raise ValueError("rating needs at least one price book")
    versions.sort(key=lambda b: (b.effective_from is not None, b.effective_from or _EPOCH))
    starts = [b.effective_from for b in versions]
    if len(set(starts)) != len(starts):
        raise ValueError("two price book versions take effect at the same instant")
    return versions


def book_at(books: Books, at: datetime) -> PriceBook:
    """The version in force at ``at``: the latest with ``effective_from <= at``."""
    return _in_force(_versions(books), at)


def _in_force(versions: Sequence[PriceBook], at: datetime) -> PriceBook:
    """``book_at`` over versions already in ``_versions``' order (no sorting again)."""
    found = None
    for b in versions:
        if b.effective_from is not None and b.effective_from > at:
            break
        found = b
    if found is None:
        raise LookupError(f"no price book is in force at {at.isoformat()}")
    return found


def segments(
    books: Books, start: datetime, end: datetime
) -> list[tuple[PriceBook, datetime, datetime]]:
    """``[start, end)`` cut at each version's ``effective_from``: (version in force, from, to)."""
    versions = _versions(books)
    out = []
    for i, book in enumerate(versions):
        lo = start if book.effective_from is None else max(start, book.effective_from)
        nxt = versions[i + 1].effective_from if i + 1 < len(versions) else None
        hi = end if nxt is None else min(end, nxt)
        if hi > lo:
            out.append((book, lo, hi))
    if (not out or out[0][1] != start) and end > start:
        raise LookupError(f"no price book is in force at {start.isoformat()}")
    return out


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
class TokenCounts:
    """What a token line bills: its tokens and the prices per 1M applied to them (a batch
    line's after the batch discount, so the line's amount is ``input_tokens * input_per_1m /
    1M + output_tokens * output_per_1m / 1M``, rounded once). A price of None: the line sums
    parts priced differently."""

    input_tokens: int
    output_tokens: int
    input_per_1m: Decimal | None
    output_per_1m: Decimal | None


@dataclass(frozen=True, slots=True)
class Line:
    """One invoice line: GPU time of one SKU for one org (and project), and the facts it prices
    (a token line: no GPU time, and its ``tokens``)."""

    org_id: str
    project_id: str | None
    sku: Sku
    gpu_seconds: Decimal
    unit_price: Decimal  # per GPU-hour
    amount: Money  # rounded once
    fact_ids: tuple[str, ...] = field(default_factory=tuple)
    tokens: TokenCounts | None = None

    @property
    def gpu_hours(self) -> Decimal:
        return self.gpu_seconds / _HOUR


def seconds(delta: timedelta) -> Decimal:
    """A ``timedelta`` as exact ``Decimal`` seconds (microsecond resolution, no float)."""
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


def merge_spans(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` spans sorted, empty ones dropped, overlapping or touching ones joined."""
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
    price_book: Books,
    contracts: Iterable[ReservedContract],
    period: Period,
    *,
    outages: Iterable[Outage] = (),
    as_of: datetime | None = None,
    by_project: bool = True,
    rounding: str = ROUND_HALF_UP,
    quantum: Decimal = _CENT,
    sold_at: Mapping[str, Decimal] | None = None,
) -> tuple[Line, ...]:
    """Price GPU time of ``intervals`` inside ``period`` (up to ``as_of`` for open intervals and
    outages), excluding time their node was failed.

    ``price_book`` is one version, or several: the period is then cut where a version takes
    effect and each part of an interval is priced by the version in force during it.
    ``sold_at`` maps a reservation id to the price per GPU-hour it was sold at: its reserved
    GPU time is priced at that instead (a reservation keeps the price it was bought at).

    One line per (org, project if ``by_project``, SKU, unit price), sorted by those and by when
    the price applied first, each rounded once with ``rounding`` to ``quantum``; lines with no
    billable time are left out. A price change inside the period gives a SKU one line per price.
    """
    end = period.end if as_of is None else max(period.start, min(period.end, as_of))
    parts = segments(price_book, period.start, end) if end > period.start else []
    terms = {c.reservation_id: c.term for c in contracts}
    failed: dict[str, list[tuple[datetime, datetime]]] = {}
    for o in outages:
        failed.setdefault(o.node_id, []).append((o.start, end if o.end is None else o.end))
    merged = {node: merge_spans(spans) for node, spans in failed.items()}

    # First by version (cheap keys), then lines of equal price across versions merged.
    parts_of: dict[tuple[str, str | None, Sku, int, Decimal | None], list[Any]] = {}
    indexed = list(enumerate((lo, hi) for _, lo, hi in parts))
    sold = sold_at or {}
    for iv in _dedupe(intervals):
        sku = sku_of(iv, terms)
        lock = sold.get(iv.reservation_id or "") if iv.cls == RESERVED else None
        spans = merged.get(iv.node_id, ())
        project = iv.project_id if by_project else None
        for i, (lo, hi) in indexed:
            secs = billable_seconds(iv, spans, lo, hi)
            if secs <= 0:
                continue
            key = (iv.org_id, project, sku, i, lock)
            acc = parts_of.get(key)
            if acc is None:
                acc = parts_of[key] = [Decimal(0), []]
            acc[0] += secs * iv.gpus
            acc[1].append(iv.id)

    groups: dict[tuple[str, str | None, Sku, Decimal], _Group] = {}
    for (org_id, project_id, sku, i, lock), (gpu_seconds, ids) in parts_of.items():
        book, lo, _ = parts[i]
        unit = book.price(sku) if lock is None else lock
        group = groups.get((org_id, project_id, sku, unit))
        if group is None:
            group = groups[(org_id, project_id, sku, unit)] = _Group(lo, book.currency)
        group.gpu_seconds += gpu_seconds
        group.first = min(group.first, lo)
        group.ids.update(ids)

    lines = []
    ctx = decimal.Context(prec=_PRECISION)
    for (org_id, project_id, sku, unit), g in groups.items():
        exact = ctx.divide(ctx.multiply(g.gpu_seconds, unit), _HOUR)
        amount = Money(exact, g.currency).rounded(quantum, rounding)
        facts = tuple(sorted(g.ids))
        lines.append((g.first, Line(org_id, project_id, sku, g.gpu_seconds, unit, amount, facts)))
    lines.sort(key=lambda fl: (fl[1].org_id, fl[1].project_id or "", fl[1].sku.code, fl[0]))
    return tuple(line for _, line in lines)


@dataclass(slots=True)
class _Group:
    first: datetime
    currency: str
    gpu_seconds: Decimal = Decimal(0)
    ids: set[str] = field(default_factory=set)


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
class TokenLine:
    org_id: str
    model: str
    batch: bool
    input_tokens: int
    output_tokens: int
    amount: Money
    fact_ids: tuple[str, ...]
    rate: TokenRate | None = None  # the price applied (a price change splits a model's line)

    @property
    def sku(self) -> Sku:
        """``MODEL.tokens`` (``MODEL.tokens.batch`` for the batch API), as invoices store it."""
        return Sku(self.model, "tokens", "batch" if self.batch else None)

    @property
    def counts(self) -> TokenCounts:
        """The counts and the prices per 1M applied (a batch line's after its discount)."""
        if self.rate is None:
            return TokenCounts(self.input_tokens, self.output_tokens, None, None)
        keep = 1 - self.rate.batch_discount if self.batch else Decimal(1)
        return TokenCounts(
            self.input_tokens,
            self.output_tokens,
            self.rate.input_per_1m * keep,
            self.rate.output_per_1m * keep,
        )


def rate_tokens(
    usage: Iterable[TokenUsage],
    prices: Mapping[str, TokenRate] | Books,
    period: Period,
    *,
    currency: str = "USD",
    rounding: str = ROUND_HALF_UP,
    quantum: Decimal = _CENT,
) -> tuple[TokenLine, ...]:
    """One line per (org, model, batch, price) of the events inside ``period``, each event
    counted once (by id), priced per 1M tokens and rounded once per line.

    ``prices``: one set of token prices, or price book versions, where each event is priced by
    the version in force at its time (a price change inside the period splits a model's line)."""
    seen: dict[str, TokenUsage] = {}
    for u in usage:
        if period.start <= u.time < period.end:
            seen.setdefault(u.id, u)
    versions = None if isinstance(prices, Mapping) else _versions(prices)
    groups: dict[tuple[str, str, bool, TokenRate], list[TokenUsage]] = {}
    for u in seen.values():
        table = prices if isinstance(prices, Mapping) else _in_force(versions or [], u.time).tokens
        try:
            price = table[u.model]
        except KeyError:
            raise LookupError(
                f"no token price for model {u.model} at {u.time.isoformat()}"
            ) from None
        groups.setdefault((u.org_id, u.model, u.batch, price), []).append(u)
    lines = []
    ctx = decimal.Context(prec=_PRECISION)
    for (org_id, model, batch, price), items in groups.items():
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
        first = min(u.time for u in items)
        line = TokenLine(org_id, model, batch, tokens_in, tokens_out, amount, ids, price)
        lines.append((first, line))
    lines.sort(key=lambda fl: (fl[1].org_id, fl[1].model, fl[1].batch, fl[0], fl[1].fact_ids))
    return tuple(line for _, line in lines)
