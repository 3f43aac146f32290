"""Invoice line arithmetic, pure: the lines a draft holds, and what late facts change.

A draft's usage lines are the month rated; a finalized month is never rewritten, so late facts
for it become ``adjustment`` lines: re-rating the month now, less what its finalized invoice
and credit notes already billed, one line per (SKU, project) that changed. Agreement lines that
depend on a month's facts (reservation charges, covered usage, true-ups) are compared the same
way. A credit note gives back credit and prepaid balance first (``restorations``).

Plain data in, plain data out: no database, no clock. ``billing.invoices`` loads the facts and
stores the lines; ``billing.ledger`` reads what was billed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from neocloud.billing.contracts import PAID_CREDIT, PROMOTIONAL_CREDIT, Charge
from neocloud.billing.kinds import ContractKind, LineKind
from neocloud.billing.rating import Line, Period, TokenCounts
from neocloud.kernel.money import quantize_amount


@dataclass(frozen=True, slots=True)
class LineDraft:
    """A line as a draft invoice (or a credit note) will store it."""

    kind: LineKind
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


# Agreement lines that depend on a month's facts: re-rating a closed month compares them too.
FACT_KINDS = (LineKind.RESERVATION, LineKind.RESERVED_USAGE, LineKind.TRUE_UP)
# An agreement line's identity within a month: (kind, contract id, SKU).
AgreementKey = tuple[LineKind, str, str]


def period_name(period: Period) -> str:
    """``YYYY-MM`` of the month ``period`` starts in."""
    return period.start.strftime("%Y-%m")


def previous(period: Period) -> Period:
    """The calendar month before the one ``period`` starts in."""
    return Period.month(period_name(Period(period.start - timedelta(days=1), period.start)))


def usage_lines(lines: Iterable[Line], usage_period: str) -> list[LineDraft]:
    """Rated lines (GPU time and tokens) as a draft's ``usage`` lines."""
    return [
        LineDraft(
            LineKind.USAGE,
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


def charge_lines(charges: Iterable[Charge]) -> list[LineDraft]:
    """Agreement charges (reservations, true-ups, prepaid, credits) as draft lines."""
    return [
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
        for ch in charges
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
    return None if price is None else quantize_amount(price, _PRICE_SCALE, ROUND_HALF_UP)


_UsageKey = tuple[str, str | None]  # (SKU, project)


def adjustment_lines(
    rerated: Iterable[Line], billed: Iterable[Billed], usage_period: str
) -> list[LineDraft]:
    """The difference between a month rated now and what was billed for it, one line per
    (SKU, project) that changed; its facts are those not billed before (or all it rates). A
    token line's adjustment carries the difference in tokens and the prices of the lines its
    new facts are on (None when those differ)."""
    new: dict[_UsageKey, Line] = {}
    parts: dict[_UsageKey, list[Line]] = {}
    for ln in rerated:  # a price change gives a SKU two lines: compare their sum
        key = (ln.sku.code, ln.project_id)
        seen = new.get(key)
        new[key] = ln if seen is None else _combined(seen, ln)
        parts.setdefault(key, []).append(ln)
    old: dict[_UsageKey, tuple[Decimal, Decimal, set[str]]] = {}
    old_tokens: dict[_UsageKey, tuple[int, int] | None] = {}
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
                LineKind.ADJUSTMENT,
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


def agreement_deltas(
    fresh: Iterable[Charge],
    billed: Mapping[AgreementKey, tuple[Decimal, Decimal]],
    usage_period: str,
) -> list[LineDraft]:
    """For a closed month, what its reservation, covered-usage and true-up lines come to now
    minus what was billed for them (``billed``: amount and GPU-seconds per key), one line per
    contract and SKU that changed: a late fact that a commitment already paid for is taken back
    off its true-up, not billed twice."""
    now: dict[AgreementKey, tuple[Decimal, Decimal, Decimal, tuple[str, ...]]] = {}
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


def total(lines: Iterable[LineDraft]) -> Decimal:
    """The sum of the lines' amounts (exact: each line is already rounded)."""
    return sum((d.amount for d in lines), Decimal(0))


def line_json(d: LineDraft) -> dict[str, Any]:
    """A line as a credit note stores it (amounts as exact decimal strings)."""
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
RESTORE_ORDER = {PROMOTIONAL_CREDIT: 0, PAID_CREDIT: 1, ContractKind.PREPAID: 2}


def restorations(
    paid_by: Iterable[tuple[str, str | None, Decimal]],
    given: Mapping[str, Decimal],
    value: Decimal,
) -> list[dict[str, Any]]:
    """``restored`` credit-note lines giving back up to ``value`` to what paid an invoice:
    ``paid_by`` is its credit and drawdown lines as (SKU, grant or contract id, amount; the
    amounts negative), ``given`` what earlier credit notes on it gave back to each."""
    back_so_far = dict(given)
    out = []
    for sku, ref, amount in sorted(paid_by, key=lambda r: (RESTORE_ORDER.get(r[0], 3), r[1])):
        if value <= 0:
            break
        if ref is None:
            continue
        back = min(-amount - back_so_far.get(ref, Decimal(0)), value)
        if back > 0:
            out.append(
                {
                    "kind": LineKind.RESTORED,
                    "sku": sku,
                    "reference_id": ref,
                    "amount": format(back, "f"),
                }
            )
            back_so_far[ref] = back_so_far.get(ref, Decimal(0)) + back
            value -= back
    return out
