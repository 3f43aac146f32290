"""Billing wire shapes: price books, usage events, invoice previews."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema
from typing_extensions import TypedDict

from neocloud.billing.contracts import Charge
from neocloud.billing.credits import GrantView
from neocloud.billing.invoices import CloseResult
from neocloud.billing.kinds import ContractKind, ReservationBilling
from neocloud.billing.rating import Line, TokenLine
from neocloud.billing.service import InvoicePreview
from neocloud.billing.storage import STORAGE_SKU
from neocloud.billing.tables import (
    ContractRow,
    CreditNoteRow,
    InvoiceLineRow,
    InvoiceRow,
    PriceBookRow,
)
from neocloud.kernel.money import Money
from neocloud.web.fields import (
    TOKENS_MAX,
    Amount,
    Clean,
    Count,
    Currency,
    CurrencyCode,
    Fraction,
    Id,
    Price,
    Priority,
    Text,
    UtcTime,
)
from neocloud.web.schemas import MoneyOut, RequestModel, ResponseModel, Time

MAX_PRICES = 1000  # SKUs or models in one price book

Sku = Annotated[Clean, Field(min_length=1, max_length=128)]


class TokenPriceIn(RequestModel):
    input_per_1m: Price = Field(examples=["0.20"])
    output_per_1m: Price = Field(examples=["0.60"])
    batch_discount: Fraction = Decimal("0.50")


class PriceBookCreate(RequestModel):
    effective_from: UtcTime
    currency: CurrencyCode = "USD"  # the service refuses the unsupported, listing the rest
    gpu_prices: dict[Sku, Price] = Field(
        default_factory=dict,
        max_length=MAX_PRICES,
        description="Per GPU-hour by SKU (MODEL.on_demand, MODEL.spot, MODEL.reserved.1m|1y); "
        "unlisted SKUs keep the catalog-derived default",
        examples=[{"H100-SXM-80GB.on_demand": "2.95"}],
    )
    # Model ids are checked by the service (invalid_model_id): at most 128 characters, no controls.
    token_prices: dict[str, TokenPriceIn] = Field(default_factory=dict, max_length=MAX_PRICES)
    note: Text | None = None


class PriceBookOut(ResponseModel):
    id: str
    object: Literal["price_book"] = "price_book"
    created_at: Time
    effective_from: Time
    currency: str
    gpu_prices: dict[str, str]
    token_prices: dict[str, dict[str, str]]
    note: str | None

    @classmethod
    def of(cls, row: PriceBookRow) -> PriceBookOut:
        return cls(
            id=row.id,
            created_at=row.created_at,
            effective_from=row.effective_from,
            currency=row.currency,
            gpu_prices=row.gpu_prices,
            token_prices=row.token_prices,
            note=row.note,
        )


def _token_bound(value: Any) -> Any:
    # Only the bound: other bad counts (negative, not integers) get the service's own
    # invalid_usage_event refusal, which lists every rejected event.
    if isinstance(value, int) and value > TOKENS_MAX:
        raise ValueError(f"a token count is at most {TOKENS_MAX:,} per event")
    return value


TokenCountIn = Annotated[
    Any,
    AfterValidator(_token_bound),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": TOKENS_MAX}),
]


class UsageDataIn(TypedDict, total=False):
    """An event's ``data``: free-form, except that token counts are bounded."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    input_tokens: TokenCountIn
    output_tokens: TokenCountIn


# Read as a plain dict by the code; validated (and documented) as ``UsageDataIn``.
if TYPE_CHECKING:
    UsageData = dict[str, Any]
else:
    UsageData = UsageDataIn


class UsageEventIn(RequestModel):
    id: Clean = Field(min_length=1, max_length=128, description="Unique per source: the dedup key")
    source: Clean = Field(min_length=1, max_length=128, examples=["studio"])
    type: Clean = Field(min_length=1, max_length=128, examples=["tokens"])
    subject: Clean = Field(min_length=1, max_length=255, examples=["llama-3.1-8b"])
    time: UtcTime
    data: UsageData = Field(default_factory=dict)


class UsageBatchIn(RequestModel):
    events: list[UsageEventIn] = Field(max_length=1000)


class UsageBatchOut(ResponseModel):
    object: Literal["usage_batch"] = "usage_batch"
    accepted: int
    duplicates: int


class InvoiceLineOut(ResponseModel):
    description: str
    org_id: str
    project_id: str | None
    sku: str
    gpu_model: str
    cls: str
    term: str | None
    gpu_seconds: str
    gpu_hours: str
    unit_price: MoneyOut
    amount: MoneyOut
    fact_ids: list[str]

    @classmethod
    def of(cls, line: Line, currency: str) -> InvoiceLineOut:
        hours = line.gpu_hours.quantize(Decimal("0.000001"))
        # A storage line's hours are GiB-hours (billing.storage), priced per GiB-month.
        unit = "GiB-hours" if line.sku == STORAGE_SKU else "GPU-hours"
        return cls(
            description=f"{line.sku.gpu_model} {line.sku.cls.replace('_', '-')}"
            + (f" {line.sku.term}" if line.sku.term else "")
            + f", {hours.normalize():f} {unit}",
            org_id=line.org_id,
            project_id=line.project_id,
            sku=line.sku.code,
            gpu_model=line.sku.gpu_model,
            cls=line.sku.cls,
            term=line.sku.term,
            gpu_seconds=format(line.gpu_seconds, "f"),
            gpu_hours=format(hours, "f"),
            unit_price=MoneyOut.of(Money(line.unit_price, currency)),
            amount=MoneyOut.of(line.amount),
            fact_ids=list(line.fact_ids),
        )


_PER_1M = "Price per 1M tokens applied (a batch line's after the batch discount)"


class ServiceLineOut(ResponseModel):
    """A platform service's line: ``quantity`` unit-hours (preset-hours, or GiB-hours of
    storage priced per GiB-month of 730 hours) at ``unit_price`` per unit-hour."""

    sku: str = Field(examples=["postgres.small.hour", "postgres.storage.gib_month"])
    description: str
    quantity: str = Field(description="Unit-hours: hours, or GiB-hours")
    unit_price: MoneyOut = Field(description="Per unit-hour")
    amount: MoneyOut
    fact_ids: list[str]

    @classmethod
    def of(cls, line: Line) -> ServiceLineOut:
        hours = line.gpu_hours.quantize(Decimal("0.000001")).normalize()
        unit = "GiB-hours" if line.sku.cls == "gib_month" else "hours"
        cur = line.amount.currency
        return cls(
            sku=line.sku.code,
            description=f"{line.sku.gpu_model}, {hours:f} {unit}",
            quantity=f"{hours:f}",
            unit_price=MoneyOut(amount=f"{line.unit_price.normalize():f}", currency=cur),
            amount=MoneyOut.of(line.amount),
            fact_ids=list(line.fact_ids),
        )


class TokenLineOut(ResponseModel):
    sku: str = Field(examples=["neocloud/tiny-llama.tokens"], description="As invoices store it")
    model: str
    batch: bool
    input_tokens: int
    output_tokens: int
    input_price_per_1m: MoneyOut | None = Field(None, description=_PER_1M)
    output_price_per_1m: MoneyOut | None = Field(None, description=_PER_1M)
    amount: MoneyOut
    fact_ids: list[str]

    @classmethod
    def of(cls, line: TokenLine) -> TokenLineOut:
        cur = line.amount.currency
        counts = line.counts
        return cls(
            sku=line.sku.code,
            model=line.model,
            batch=line.batch,
            input_tokens=line.input_tokens,
            output_tokens=line.output_tokens,
            input_price_per_1m=_price(counts.input_per_1m, cur),
            output_price_per_1m=_price(counts.output_per_1m, cur),
            amount=MoneyOut.of(line.amount),
            fact_ids=list(line.fact_ids),
        )


def _price(value: Decimal | None, currency: str) -> MoneyOut | None:
    """A unit price as stored, without trailing zeros (alike on both backends)."""
    return None if value is None else MoneyOut.of(Money(value.normalize(), currency))


class ChargeOut(ResponseModel):
    kind: str = Field(examples=["true_up"])
    usage_period: str
    sku: str
    reference_id: str = Field(description="The contract or credit grant")
    gpu_seconds: str
    unit_price: MoneyOut
    amount: MoneyOut
    fact_ids: list[str]

    @classmethod
    def of(cls, ch: Charge, currency: str) -> ChargeOut:
        return cls(
            kind=ch.kind,
            usage_period=ch.usage_period,
            sku=ch.sku,
            reference_id=ch.reference_id,
            gpu_seconds=format(ch.gpu_seconds, "f"),
            unit_price=MoneyOut.of(Money(ch.unit_price, currency)),
            amount=MoneyOut.of(Money(ch.amount, currency)),
            fact_ids=list(ch.fact_ids),
        )


class InvoicePreviewOut(ResponseModel):
    object: Literal["invoice_preview"] = "invoice_preview"
    org_id: str
    period: str
    period_start: Time
    period_end: Time
    as_of: Time
    price_book_id: str
    lines: list[InvoiceLineOut]
    token_lines: list[TokenLineOut]
    service_lines: list[ServiceLineOut] = Field(
        default_factory=list, description="Managed databases: preset-hours and storage"
    )
    agreement_lines: list[ChargeOut] = Field(
        default_factory=list,
        description="Reservation charges, true-ups, prepaid drawdowns and credits",
    )
    total: MoneyOut

    @classmethod
    def of(cls, p: InvoicePreview, charges: Sequence[Charge] = ()) -> InvoicePreviewOut:
        total = Money.zero(p.currency)
        for line in p.lines:
            total += line.amount
        for tline in p.token_lines:
            total += tline.amount
        for sline in p.service_lines:
            total += sline.amount
        for ch in charges:
            total += Money(ch.amount, p.currency)
        return cls(
            org_id=p.org_id,
            period=p.period.start.strftime("%Y-%m"),
            period_start=p.period.start,
            period_end=p.period.end,
            as_of=p.as_of,
            price_book_id=p.price_book_id,
            lines=[InvoiceLineOut.of(ln, p.currency) for ln in p.lines],
            token_lines=[TokenLineOut.of(tl) for tl in p.token_lines],
            service_lines=[ServiceLineOut.of(sl) for sl in p.service_lines],
            agreement_lines=[ChargeOut.of(ch, p.currency) for ch in charges],
            total=MoneyOut.of(total),
        )


class InvoiceCreate(RequestModel):
    org_id: Id
    period: str = Field(pattern=r"^\d{4}-\d{2}$", examples=["2026-11"])


class StoredLineOut(ResponseModel):
    kind: str
    usage_period: str
    sku: str
    project_id: str | None
    gpu_seconds: str
    unit_price: MoneyOut
    amount: MoneyOut
    fact_ids: list[str]
    reference_id: str | None = None
    input_tokens: int | None = Field(None, description="Token lines: input tokens billed")
    output_tokens: int | None = Field(None, description="Token lines: output tokens billed")
    input_price_per_1m: MoneyOut | None = Field(None, description=_PER_1M)
    output_price_per_1m: MoneyOut | None = Field(None, description=_PER_1M)


class InvoiceOut(ResponseModel):
    id: str
    object: Literal["invoice"] = "invoice"
    org_id: str
    period: str
    state: str
    created_at: Time
    rated_at: Time
    finalized_at: Time | None
    price_book_id: str
    total: MoneyOut
    lines: list[StoredLineOut] | None = None

    @classmethod
    def of(cls, inv: InvoiceRow, lines: Sequence[InvoiceLineRow] | None = None) -> InvoiceOut:
        cur = inv.currency
        return cls(
            id=inv.id,
            org_id=inv.org_id,
            period=inv.period,
            state=inv.state,
            created_at=inv.created_at,
            rated_at=inv.rated_at,
            finalized_at=inv.finalized_at,
            price_book_id=inv.price_book_id,
            total=MoneyOut.of(Money(inv.total, cur).rounded()),
            lines=None
            if lines is None
            else [
                StoredLineOut(
                    kind=ln.kind,
                    usage_period=ln.usage_period,
                    sku=ln.sku,
                    project_id=ln.project_id,
                    gpu_seconds=format(ln.gpu_seconds.normalize(), "f"),
                    unit_price=MoneyOut.of(Money(ln.unit_price.normalize(), cur)),
                    amount=MoneyOut.of(Money(ln.amount, cur).rounded()),
                    fact_ids=list(ln.fact_ids),
                    reference_id=ln.reference_id,
                    input_tokens=ln.input_tokens,
                    output_tokens=ln.output_tokens,
                    input_price_per_1m=_price(ln.input_price_per_1m, cur),
                    output_price_per_1m=_price(ln.output_price_per_1m, cur),
                )
                for ln in lines
            ],
        )


# -- agreements ----------------------------------------------------------------------------------


class ContractCreate(RequestModel):
    org_id: Id
    kind: Clean = Field(
        max_length=16,
        description=" | ".join(ContractKind),
        examples=["commit_spend"],
    )
    start_at: UtcTime | None = Field(None, description="Required except for reservation")
    end_at: UtcTime | None = Field(None, description="Required except for reservation")
    amount: Amount | None = Field(
        None, description="commit_spend: per month; prepaid: the prepayment", examples=["100000"]
    )
    gpu_model: Clean | None = Field(None, max_length=32, examples=["H100-SXM-80GB"])
    gpus: Count | None = Field(None, description="commit_capacity and backstop")
    rate: Amount | None = Field(None, description="Per GPU-hour (commit_capacity, backstop)")
    reservation_id: Id | None = None
    term: Clean | None = Field(None, max_length=8, description="reservation: 1m or 1y")
    billing: Clean | None = Field(
        None, max_length=8, description=f"reservation: {'|'.join(ReservationBilling)}"
    )
    counterparty: Clean | None = Field(None, max_length=255, description="backstop: who pays")
    currency: Currency = "USD"
    note: Text | None = None


def _money(value: Decimal | None, currency: str) -> MoneyOut | None:
    """Cents when the value is whole cents (both backends alike), else every digit it has."""
    if value is None:
        return None
    cents = value.quantize(Decimal("0.01"))
    return MoneyOut.of(Money(cents if cents == value else value.normalize(), currency))


class ContractOut(ResponseModel):
    id: str
    object: Literal["contract"] = "contract"
    org_id: str
    kind: str
    start_at: Time
    end_at: Time
    amount: MoneyOut | None
    gpu_model: str | None
    gpus: int | None
    rate: MoneyOut | None
    reservation_id: str | None
    term: str | None
    billing: str | None
    counterparty: str | None
    note: str | None
    created_at: Time

    @classmethod
    def of(cls, row: ContractRow) -> ContractOut:
        return cls(
            id=row.id,
            org_id=row.org_id,
            kind=row.kind,
            start_at=row.start_at,
            end_at=row.end_at,
            amount=_money(row.amount, row.currency),
            gpu_model=row.gpu_model,
            gpus=row.gpus,
            rate=_money(row.rate, row.currency),
            reservation_id=row.reservation_id,
            term=row.term,
            billing=row.billing,
            counterparty=row.counterparty,
            note=row.note,
            created_at=row.created_at,
        )


class CreditGrantCreate(RequestModel):
    org_id: Id
    amount: Amount = Field(examples=["500.00"])
    priority: Priority = Field(0, description="Lower is used first")
    expires_at: UtcTime | None = None
    paid: bool = Field(False, description="Bought (refundable) rather than promotional")
    currency: Currency = "USD"
    note: Text | None = None


class CreditGrantOut(ResponseModel):
    id: str
    object: Literal["credit_grant"] = "credit_grant"
    org_id: str
    amount: MoneyOut
    balance: MoneyOut
    priority: int
    expires_at: Time | None
    paid: bool
    note: str | None
    created_at: Time

    @classmethod
    def of(cls, view: GrantView) -> CreditGrantOut:
        g = view.grant
        return cls(
            id=g.id,
            org_id=g.org_id,
            amount=MoneyOut.of(Money(g.amount, g.currency).rounded()),
            balance=MoneyOut.of(Money(view.balance, g.currency).rounded()),
            priority=g.priority,
            expires_at=g.expires_at,
            paid=g.paid,
            note=g.note,
            created_at=g.created_at,
        )


class CreditNoteOut(ResponseModel):
    id: str
    object: Literal["credit_note"] = "credit_note"
    org_id: str
    invoice_id: str
    usage_period: str
    total: MoneyOut
    lines: list[dict[str, Any]]
    created_at: Time

    @classmethod
    def of(cls, row: CreditNoteRow) -> CreditNoteOut:
        return cls(
            id=row.id,
            org_id=row.org_id,
            invoice_id=row.invoice_id,
            usage_period=row.usage_period,
            total=MoneyOut.of(Money(row.total, row.currency).rounded()),
            lines=row.lines,
            created_at=row.created_at,
        )


class CloseIn(RequestModel):
    period: str | None = Field(
        None, pattern=r"^\d{4}-\d{2}$", description="Default: the month before now"
    )


class OrgFailureOut(ResponseModel):
    org_id: str
    code: str = Field(examples=["amount_out_of_range"])
    message: str


class CloseOut(ResponseModel):
    object: Literal["invoice_run"] = "invoice_run"
    period: str
    drafts: list[str]
    finalized: list[str]
    unchanged: list[str]
    failed: list[OrgFailureOut] = Field(
        default_factory=list,
        description="orgs skipped by this run (rolled back, logged; the next run retries them)",
    )

    @classmethod
    def of(cls, r: CloseResult) -> CloseOut:
        return cls(
            period=r.period,
            drafts=list(r.drafts),
            finalized=list(r.finalized),
            unchanged=list(r.unchanged),
            failed=[
                OrgFailureOut(org_id=f.org_id, code=f.code, message=f.message) for f in r.failed
            ],
        )
