"""Billing services: publish price book versions, and load the facts (allocation intervals,
node outages, token usage) and prices that rating, invoices and reports rate.

Module-level functions with keyword-only arguments, one transaction each, raising the kernel's
errors. Rating itself is pure (``billing.rating``); this module only loads facts and prices.
Usage events are ingested by ``billing.usage``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.metered import DEFAULT_SERVICE_PRICES, Span, rate_spans
from neocloud.billing.pricebook import default_gpu_prices, skypilot_catalog
from neocloud.billing.rating import (
    RESERVED,
    TERMS,
    Interval,
    Line,
    Outage,
    Period,
    PriceBook,
    Sku,
    TokenLine,
    TokenRate,
    TokenUsage,
    book_at,
    rate,
    rate_tokens,
)
from neocloud.billing.storage import STORAGE_SKU, storage_lines
from neocloud.billing.tables import ContractRow, PriceBookRow, UsageEventRow
from neocloud.billing.usage import TOKENS
from neocloud.compute.tables import AllocationRow, ReservationRow
from neocloud.databases.tables import DatabaseUsageRow
from neocloud.db.engine import Database
from neocloud.fleet.catalog import CATALOG, find_gpu_model
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeEventRow, NodeRow
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.kernel.money import (
    SUPPORTED_CURRENCIES,
    AmountOutOfRange,
    quantize_amount,
    to_decimal,
)

# -- price book -------------------------------------------------------------------------------


def parse_sku(code: str, *, param: str) -> Sku:
    """``H100-SXM-80GB.on_demand`` / ``….reserved.1y`` → ``Sku``; 422 naming ``param``."""
    if code == STORAGE_SKU.code:  # shared filesystems, per GiB-month
        return STORAGE_SKU
    parts = code.split(".")
    ok = (len(parts) == 2 and parts[1] in ("on_demand", "spot")) or (
        len(parts) == 3 and parts[1] == RESERVED and parts[2] in TERMS
    )
    if not ok or not parts[0]:
        raise ValidationFailed(
            f"{code!r} is not a SKU: use MODEL.on_demand, MODEL.spot or MODEL.reserved.TERM "
            f"with TERM one of {', '.join(TERMS)}, or {STORAGE_SKU.code}",
            code="invalid_sku",
            param=param,
        )
    return Sku(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def canonical_sku(code: str, *, param: str) -> Sku:
    """``code`` as the SKU it names, its GPU model resolved through the fleet catalog (an alias
    or another case becomes the canonical id: ``H100.spot`` is ``H100-SXM-80GB.spot``); a GPU
    model the catalog does not know is a 422 ``unknown_gpu_model`` naming ``param`` and
    listing the valid models."""
    sku = parse_sku(code, param=param)
    if sku == STORAGE_SKU:
        return sku
    model = find_gpu_model(sku.gpu_model)
    if model is None:
        valid = [m.id for m in CATALOG]
        raise ValidationFailed(
            f"{sku.gpu_model!r} in {code!r} is not a GPU model of the catalog; use one of "
            f"{', '.join(valid)} (or one of their aliases)",
            code="unknown_gpu_model",
            param=param,
            details={"valid": valid},
        )
    return Sku(model.id, sku.cls, sku.term)


def canonical_gpu_prices(stored: Mapping[str, str]) -> dict[str, str]:
    """A stored book's GPU prices keyed by canonical SKU, for carrying them into a new version.
    A book stored before SKUs were resolved may hold an alias (``H100.spot``) beside the
    canonical default: the alias's price is the one the operator gave, so it wins. A SKU whose
    GPU model the catalog no longer knows is dropped (nothing can be billed under it)."""
    out: dict[str, str] = {}
    aliased: dict[str, str] = {}
    for code, price in stored.items():
        try:
            sku = canonical_sku(code, param="gpu_prices")
        except ValidationFailed:
            continue
        (out if sku.code == code else aliased)[sku.code] = price
    return out | aliased


def require_currency(currency: str, *, param: str = "currency") -> None:
    """A currency the platform bills in (``kernel.money.SUPPORTED_CURRENCIES``), else a 422
    ``unsupported_currency`` listing them."""
    if currency not in SUPPORTED_CURRENCIES:
        raise ValidationFailed(
            f"currency {currency!r} is not supported; the platform bills in "
            f"{', '.join(SUPPORTED_CURRENCIES)}",
            code="unsupported_currency",
            param=param,
            details={"supported": list(SUPPORTED_CURRENCIES)},
        )


# A Studio model id, as the Studio's registry accepts one (``studio.registry.MODEL_ID``; billing
# may not import the Studio, which sits above it).
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def require_model_id(model: str) -> None:
    """A token price's model must be a well-formed Studio model id (422 ``invalid_model_id``).
    Whether the Studio serves it is not checked here: billing sits below the Studio, and a
    price set before its model is registered is inert (only the platform meters usage)."""
    if not MODEL_ID.match(model):
        raise ValidationFailed(
            f"{model!r} is not a model id: 1 to 128 letters, digits and . _ : / -, starting "
            "with a letter or digit",
            code="invalid_model_id",
            param="token_prices",
            details={"model": model},
        )


def _book(row: PriceBookRow) -> PriceBook:
    prices = {parse_sku(k, param="gpu_prices"): to_decimal(v) for k, v in row.gpu_prices.items()}
    tokens = _token_rates(row.token_prices)
    services = dict(DEFAULT_SERVICE_PRICES)  # not publishable yet: the defaults price them
    return PriceBook(row.id, prices, row.currency, row.effective_from, tokens, services)


def _token_rates(token_prices: Mapping[str, Any]) -> dict[str, TokenRate]:
    return {
        model: TokenRate(
            to_decimal(p["input_per_1m"]),
            to_decimal(p["output_per_1m"]),
            to_decimal(p.get("batch_discount", "0.5")),
        )
        for model, p in token_prices.items()
    }


def publish_price_book(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    effective_from: datetime | None,
    gpu_prices: Mapping[str, Decimal],
    token_prices: Mapping[str, Mapping[str, Decimal]],
    currency: str = "USD",
    note: str | None = None,
) -> PriceBookRow:
    """Publish a new version (operator admins). It may not take effect in the past: periods
    already rated keep their prices. Unlisted SKUs keep the catalog-derived default. SKUs are
    stored under their canonical GPU model (aliases resolved, unknown models refused), token
    prices under well-formed model ids, in a currency the platform supports (all 422).
    ``effective_from=None``: from this instant, as the clock reads it here."""
    principal.require_operator(write=True)
    now = clock.now()
    if effective_from is None:
        effective_from = now
    if effective_from < now:
        raise ValidationFailed(
            "a price book cannot take effect in the past", param="effective_from"
        )
    require_currency(currency)
    prices = {sku.code: str(p) for sku, p in default_gpu_prices().items()}
    given: dict[str, str] = {}  # canonical SKU code -> the code the caller wrote
    for code, price in gpu_prices.items():
        param = f"gpu_prices.{code}"
        sku = canonical_sku(code, param=param)
        if price < 0:
            raise ValidationFailed("prices are not negative", param=param)
        if sku.code in given:
            raise ValidationFailed(
                f"{given[sku.code]!r} and {code!r} both price {sku.code}: give each SKU once",
                code="duplicate_sku",
                param=param,
            )
        given[sku.code] = code
        prices[sku.code] = str(price)
    for model in token_prices:
        require_model_id(model)
    tokens = {m: {k: str(v) for k, v in p.items()} for m, p in token_prices.items()}
    row = PriceBookRow(
        id=new_id("pb", at=now),
        effective_from=effective_from,
        currency=currency,
        gpu_prices=prices,
        token_prices=tokens,
        note=note,
        created_by=principal.key_id,
        created_at=now,
    )
    try:
        with db.transaction() as s:
            s.add(row)
            s.flush()
            s.expunge(row)
    except Conflict:
        raise Conflict(
            f"a price book already takes effect at {effective_from.isoformat()}",
            code="price_book_exists",
            param="effective_from",
        ) from None
    return row


def find_price_book_row(s: Session, at: datetime) -> PriceBookRow | None:
    """The version in force at ``at`` (the latest effective at or before it)."""
    query = (
        sa.select(PriceBookRow)
        .where(PriceBookRow.effective_from <= at)
        .order_by(PriceBookRow.effective_from.desc())
        .limit(1)
    )
    return s.scalars(query).first()


def get_current_price_book(*, db: Database, clock: Clock) -> PriceBookRow:
    with db.transaction() as s:
        row = find_price_book_row(s, clock.now())
        if row is None:
            raise NotFound("no price book has been published yet", code="price_book_not_found")
        s.expunge(row)
        return row


def price_book_at(s: Session, at: datetime) -> PriceBook:
    """The book in force at ``at``, or the catalog-derived default before any is published."""
    row = find_price_book_row(s, at)
    if row is None:
        return PriceBook("pb_default", default_gpu_prices(), services=dict(DEFAULT_SERVICE_PRICES))
    return _book(row)


def price_books_during(s: Session, period: Period) -> list[PriceBook]:
    """Every version in force at some time of ``period``: the one at its start (the default
    before any is published) and each one taking effect inside it, in order. Rating with all
    of them prices each part of the period by the version in force then."""
    query = (
        sa.select(PriceBookRow)
        .where(PriceBookRow.effective_from > period.start, PriceBookRow.effective_from < period.end)
        .order_by(PriceBookRow.effective_from)
    )
    return [price_book_at(s, period.start), *(_book(r) for r in s.scalars(query))]


def skypilot_csv(*, db: Database, clock: Clock) -> str:
    """The SkyPilot catalog CSV: compute's instance types in each region/zone where the fleet
    has (non-retired) nodes of their GPU model, priced by the book in force now."""
    with db.transaction() as s:
        book = price_book_at(s, clock.now())
        query = sa.select(NodeRow.gpu_model, NodeRow.topology).where(
            NodeRow.state != NodeState.RETIRED, NodeRow.role == "gpu"
        )
        zones = {
            (model, topo.get("region", ""), topo.get("zone", ""))
            for model, topo in s.execute(query)
        }
    return skypilot_catalog(book, sorted(zones))


# -- invoices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoicePreview:
    org_id: str
    period: Period
    price_book_id: str
    currency: str
    lines: tuple[Line, ...]
    as_of: datetime
    token_lines: tuple[TokenLine, ...] = ()
    service_lines: tuple[Line, ...] = ()  # managed databases


def load_token_usage(s: Session, org_id: str | None, period: Period) -> list[TokenUsage]:
    """``tokens`` usage events of ``org_id`` (None: every org) inside ``period`` (the model is
    ``data.model`` or the subject)."""
    query = sa.select(UsageEventRow).where(
        UsageEventRow.type == TOKENS,
        UsageEventRow.time >= period.start,
        UsageEventRow.time < period.end,
    )
    if org_id is not None:
        query = query.where(UsageEventRow.org_id == org_id)
    return [
        TokenUsage(
            r.id,
            r.org_id,
            str(r.data.get("model") or r.subject),
            r.time,
            stored_token_count(r, "input_tokens"),
            stored_token_count(r, "output_tokens"),
            bool(r.data.get("batch", False)),
        )
        for r in s.scalars(query)
    ]


# A stored token count billing rates: an integer an invoice line's BIGINT column can hold.
MAX_TOKEN_COUNT = 2**63 - 1


def stored_token_count(row: UsageEventRow, name: str) -> int:
    """``row.data[name]`` (0 when absent) as a token count; a stored value that is not a
    non-negative integer up to ``MAX_TOKEN_COUNT`` (a row written around the API's checks) is
    a 409 ``usage_out_of_range`` naming the event, not a crash in whatever reads it."""
    value = row.data.get(name, 0)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    raise Conflict(
        f"usage event {row.event_id} of {row.org_id} holds {name} {value!r}, which cannot be "
        f"rated: token counts are integers from 0 to {MAX_TOKEN_COUNT}",
        code="usage_out_of_range",
        details={"org_id": row.org_id, "event_id": row.event_id, "field": name},
    )


def priced(usage: Iterable[TokenUsage], books: Sequence[PriceBook]) -> list[TokenUsage]:
    """The events whose model the version in force at their time prices (others: not billed)."""
    return [u for u in usage if u.model in book_at(books, u.time).tokens]


@dataclass(frozen=True, slots=True)
class Rated:
    """One org's usage of one period, rated: GPU lines and token lines."""

    price_book_id: str  # the version in force at the period's start
    currency: str
    lines: tuple[Line, ...]
    token_lines: tuple[TokenLine, ...]
    service_lines: tuple[Line, ...] = ()  # managed databases (``billing.metered``)

    def invoice_lines(self) -> list[Line]:
        """GPU lines, service lines, then token lines in the same shape (see
        ``token_invoice_lines``)."""
        return [*self.lines, *self.service_lines, *token_invoice_lines(self.token_lines)]


def token_invoice_lines(lines: Iterable[TokenLine]) -> list[Line]:
    """Token lines as invoice lines, so invoices store them and adjust them for late events
    like GPU lines: SKU ``MODEL.tokens`` (``MODEL.tokens.batch`` for the batch API), no project,
    no GPU time and no unit price per GPU-hour; the token counts and the two prices per 1M
    tokens applied ride along as ``tokens``."""
    return [
        Line(
            tl.org_id,
            None,
            tl.sku,
            Decimal(0),
            Decimal(0),
            tl.amount,
            tl.fact_ids,
            tl.counts,
        )
        for tl in lines
    ]


def _price_places(price: Decimal) -> Decimal:
    """A price per GPU-hour at the book's 4 places when exact there, else at 6."""
    book = quantize_amount(price, Decimal("0.0001"), ROUND_HALF_EVEN)
    return book if book == price else quantize_amount(price, Decimal("0.000001"), ROUND_HALF_EVEN)


def load_sold_prices(
    s: Session, intervals: Iterable[Interval], currency: str
) -> dict[str, Decimal]:
    """The price per GPU-hour each reservation in ``intervals`` was sold at: its quote (what
    compute charged when it was bought and extended) over its GPU-hours. Left out: reservations
    under a contract (the contract's terms price them), without a quote, or quoted in another
    currency; the price book prices those."""
    gpus_of: dict[str, int] = {}  # a reservation's GPUs: its block's, one interval a node
    for iv in intervals:
        if iv.cls == RESERVED and iv.reservation_id:
            gpus_of[iv.reservation_id] = gpus_of.get(iv.reservation_id, 0) + iv.gpus
    ids = set(gpus_of)
    if not ids:
        return {}
    contracted = set(
        s.scalars(sa.select(ContractRow.reservation_id).where(ContractRow.reservation_id.in_(ids)))
    )
    out: dict[str, Decimal] = {}
    for rsv in s.scalars(sa.select(ReservationRow).where(ReservationRow.id.in_(ids - contracted))):
        hours = Decimal((rsv.end_at - rsv.start_at).total_seconds()) / 3600
        gpus = gpus_of[rsv.id]
        if rsv.price_amount > 0 and rsv.price_currency == currency and hours > 0 and gpus > 0:
            out[rsv.id] = _price_places(rsv.price_amount / (gpus * hours))
    return out


def rate_org_period(
    s: Session,
    org_id: str | None,
    period: Period,
    as_of: datetime,
    *,
    rounding: str = ROUND_HALF_UP,
    by_project: bool = True,
) -> Rated:
    """Rate ``org_id``'s facts (None: every org's) of ``period`` up to ``as_of``: allocation
    intervals (time on failed nodes excluded) and ``tokens`` usage events, each part priced by
    the price book version in force then. Preview, invoices and reports all rate through here."""
    books = price_books_during(s, period)
    intervals = load_intervals(s, org_id, period)
    outages = load_outages(s, {iv.node_id for iv in intervals}, period.end)
    usage = priced(load_token_usage(s, org_id, period), books)
    currency = books[0].currency
    lines = rate(
        intervals,
        books,
        (),
        period,
        outages=outages,
        as_of=as_of,
        rounding=rounding,
        by_project=by_project,
        sold_at=load_sold_prices(s, intervals, currency),
    )
    tokens = rate_tokens(usage, books, period, currency=currency, rounding=rounding)
    stored = storage_lines(
        s, org_id, period, as_of, books[0], rounding=rounding, by_project=by_project
    )
    services = rate_spans(
        load_service_spans(s, org_id, period),
        books,
        period,
        as_of=as_of,
        currency=currency,
        rounding=rounding,
    )
    return Rated(books[0].version, currency, (*lines, *stored), tokens, services)


def rate_one_org(
    s: Session,
    org_id: str,
    period: Period,
    as_of: datetime,
    *,
    rounding: str = ROUND_HALF_UP,
) -> Rated:
    """``rate_org_period`` for one org; figures it cannot represent are a 409
    ``amount_out_of_range`` that names the org and the period."""
    try:
        return rate_org_period(s, org_id, period, as_of, rounding=rounding)
    except AmountOutOfRange as exc:
        raise AmountOutOfRange(
            f"the invoice of {org_id} for {period.start:%Y-%m} cannot be computed: {exc.message}",
            details={**exc.details, "org_id": org_id},
        ) from None


# Work inside a reservation runs on GPUs its reservation's block allocation (the row with the
# reservation's id and no instance or cluster) already holds and pays for: the block is the
# fact to bill, the work's own allocation is not, or those GPU-hours would count twice.
HOLDS_GPUS = sa.or_(
    AllocationRow.reservation_id.is_(None),
    sa.and_(AllocationRow.instance_id.is_(None), AllocationRow.cluster_id.is_(None)),
)


# A studio job's instance (a fine-tune or a batch on fleet capacity, ``compute/jobs.py``) holds
# GPUs like any instance, but the job is billed by its tokens (training tokens at the training
# price, batch tokens at the batch price): its GPU time is never rated, or the org would pay
# twice. Utilization (``reports._usage_intervals``, the economics' live inputs) still counts it.
RATED_AS_GPU_TIME = AllocationRow.studio_job_id.is_(None)


def load_intervals(s: Session, org_id: str | None, period: Period) -> list[Interval]:
    """Allocation facts of ``org_id`` (None: every org) that overlap ``period`` (compute's
    read model), each GPU-hour once (``HOLDS_GPUS``), without studio jobs' allocations
    (``RATED_AS_GPU_TIME``: their tokens are their bill)."""
    query = sa.select(AllocationRow).where(
        AllocationRow.start_at < period.end,
        sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > period.start),
        HOLDS_GPUS,
        RATED_AS_GPU_TIME,
    )
    if org_id is not None:
        query = query.where(AllocationRow.org_id == org_id)
    return [
        Interval(
            r.id,
            r.org_id,
            r.project_id,
            r.node_id,
            r.gpu_model,
            r.cls,
            r.gpu_count,
            r.start_at,
            r.end_at,
            r.reservation_id,
        )
        for r in s.scalars(query)
    ]


def load_outages(s: Session, node_ids: set[str], end: datetime) -> list[Outage]:
    """When each node was in state ``failed`` (from the fleet's node events) before ``end``."""
    if not node_ids:
        return []
    query = (
        sa.select(NodeEventRow)
        .where(NodeEventRow.node_id.in_(sorted(node_ids)), NodeEventRow.at < end)
        .order_by(NodeEventRow.node_id, NodeEventRow.at, NodeEventRow.id)
    )
    out: list[Outage] = []
    since: dict[str, datetime] = {}
    for ev in s.scalars(query):
        if ev.to_state == NodeState.FAILED:
            since.setdefault(ev.node_id, ev.at)
        elif ev.node_id in since:
            out.append(Outage(ev.node_id, since.pop(ev.node_id), ev.at))
    out += [Outage(node, start, None) for node, start in since.items()]
    return out


def load_service_spans(s: Session, org_id: str | None, period: Period) -> list[Span]:
    """Managed databases' running spans of ``org_id`` (None: every org) overlapping
    ``period``: each is two spans, the preset's hours and the storage's GiB."""
    query = sa.select(DatabaseUsageRow).where(
        DatabaseUsageRow.start_at < period.end,
        sa.or_(DatabaseUsageRow.end_at.is_(None), DatabaseUsageRow.end_at > period.start),
    )
    if org_id is not None:
        query = query.where(DatabaseUsageRow.org_id == org_id)
    out = []
    for r in s.scalars(query):
        for sku, quantity in (
            (f"postgres.{r.preset}.hour", Decimal(1)),
            ("postgres.storage.gib_month", Decimal(r.storage_gib)),
        ):
            out.append(Span(r.id, r.org_id, r.project_id, sku, quantity, r.start_at, r.end_at))
    return out
