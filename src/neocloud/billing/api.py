"""Billing routes: price books (operator publishes), usage events, invoice previews, invoices,
contracts, credit grants, credit notes and the monthly invoicing run."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from neocloud.billing import contract_service, credits, exports, invoices, reports, service, usage
from neocloud.billing.rating import Period
from neocloud.billing.report_schemas import (
    BacklogReportOut,
    ConcentrationOut,
    RevenueReportOut,
    UtilizationOut,
    UtilizationPointOut,
)
from neocloud.billing.schemas import (
    CloseIn,
    CloseOut,
    ContractCreate,
    ContractOut,
    CreditGrantCreate,
    CreditGrantOut,
    CreditNoteOut,
    InvoiceCreate,
    InvoiceOut,
    InvoicePreviewOut,
    PriceBookCreate,
    PriceBookOut,
    UsageBatchIn,
    UsageBatchOut,
)
from neocloud.kernel.auth import Role
from neocloud.kernel.clock import ensure_utc
from neocloud.kernel.errors import ValidationFailed
from neocloud.web.deps import AppContext, Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAG_PRICES: list[str | Enum] = ["price books"]
TAG_USAGE: list[str | Enum] = ["usage"]
TAG_INVOICES: list[str | Enum] = ["invoices"]
TAG_AGREEMENTS: list[str | Enum] = ["contracts and credits"]
OrgId = Annotated[str, Query(max_length=40)]


@router.post("/price-books", response_model=PriceBookOut, status_code=201, tags=TAG_PRICES)
def publish_price_book(body: PriceBookCreate, ctx: Ctx, caller: Caller) -> PriceBookOut:
    """Publish a new version (operator admins); it takes effect at ``effective_from``."""
    row = service.publish_price_book(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        effective_from=ensure_utc(body.effective_from),
        gpu_prices=body.gpu_prices,
        token_prices={m: p.model_dump() for m, p in body.token_prices.items()},
        currency=body.currency,
        note=body.note,
    )
    return PriceBookOut.of(row)


@router.get("/price-books/current", response_model=PriceBookOut, tags=TAG_PRICES)
def get_current_price_book(ctx: Ctx, caller: Caller) -> PriceBookOut:
    """The version in force now (404 before the operator publishes one)."""
    return PriceBookOut.of(service.get_current_price_book(db=ctx.db, clock=ctx.clock))


@router.get(
    "/price-books/current/catalog",
    tags=TAG_PRICES,
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_catalog(
    ctx: Ctx,
    caller: Caller,
    format: Annotated[str, Query(pattern="^skypilot$")] = "skypilot",
) -> Response:
    """The offer as a SkyPilot catalog CSV (InstanceType, AcceleratorName, AcceleratorCount,
    vCPUs, MemoryGiB, Price, SpotPrice, Region, AvailabilityZone), priced per instance-hour."""
    return Response(service.skypilot_csv(db=ctx.db, clock=ctx.clock), media_type="text/csv")


@router.post("/usage/events", response_model=UsageBatchOut, tags=TAG_USAGE)
def record_usage_events(
    body: UsageBatchIn, ctx: Ctx, caller: Caller, org_id: OrgId | None = None
) -> UsageBatchOut:
    """A batch of metered events for ``org_id`` (default: the caller's org). Operator admins
    only: usage is what the platform measures and bills (the Studio meters its own requests in
    process), so a tenant may not write it, under any source (403
    ``usage_events_operator_only``). Replays of (org, source, id) are counted as duplicates;
    events at most 35 days late."""
    usage.require_usage_writer(caller)
    org = org_id or caller.org_id
    caller.require_org_role(org, Role.MEMBER)
    events = [
        usage.UsageEvent(e.id, e.source, e.type, e.subject, ensure_utc(e.time), e.data)
        for e in body.events
    ]
    result = usage.record_usage_events(db=ctx.db, clock=ctx.clock, org_id=org, events=events)
    return UsageBatchOut(accepted=result.accepted, duplicates=result.duplicates)


def _period(text: str) -> Period:
    try:
        return Period.month(text)
    except ValueError as exc:
        raise ValidationFailed(str(exc), code="invalid_period", param="period") from None


@router.get(
    "/invoices/preview",
    response_model=InvoicePreviewOut,
    tags=TAG_INVOICES,
    responses={200: {"content": {"text/csv": {}}}},
)
def preview_invoice(
    ctx: Ctx,
    caller: Caller,
    org_id: OrgId,
    period: Annotated[str, Query(max_length=7, examples=["2026-11"])],
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> InvoicePreviewOut | Response:
    """The org's invoice for ``period`` (YYYY-MM) rated from the facts now; ``format=csv``
    gives one row per line. Tenants see their own org only."""
    preview, charges = invoices.preview_invoice(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        org_id=org_id,
        period=_period(period),
        rounding=ctx.settings.billing_rounding,
    )
    out = InvoicePreviewOut.of(preview, charges)
    if format == "json":
        return out
    return Response(exports.preview_csv(out), media_type="text/csv")


InvoiceId = Annotated[str, Path(max_length=40)]


def _grace(ctx: AppContext) -> timedelta:
    return timedelta(days=ctx.settings.billing_grace_days)


@router.post("/invoices", response_model=InvoiceOut, tags=TAG_INVOICES)
def build_invoice(body: InvoiceCreate, ctx: Ctx, caller: Caller) -> InvoiceOut:
    """Create or refresh the org's draft for a month from the facts (operator admins); a
    finalized invoice comes back unchanged."""
    inv_id = invoices.build_invoice(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        org_id=body.org_id,
        period=_period(body.period),
        rounding=ctx.settings.billing_rounding,
    )
    view = invoices.get_invoice(db=ctx.db, principal=caller, invoice_id=inv_id)
    return InvoiceOut.of(view.invoice, view.lines)


@router.get("/invoices", response_model=ListOut[InvoiceOut], tags=TAG_INVOICES)
def list_invoices(ctx: Ctx, caller: Caller, org_id: OrgId, paging: Paging) -> ListOut[InvoiceOut]:
    """The org's invoices, oldest first (without lines), a page at a time."""
    page = invoices.list_invoices(
        db=ctx.db, principal=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[InvoiceOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/invoices/{invoice_id}",
    response_model=InvoiceOut,
    tags=TAG_INVOICES,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_invoice(
    invoice_id: InvoiceId,
    ctx: Ctx,
    caller: Caller,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> InvoiceOut | Response:
    """An invoice with its lines (``format=csv``: one row per line, with the facts it prices)."""
    view = invoices.get_invoice(db=ctx.db, principal=caller, invoice_id=invoice_id)
    out = InvoiceOut.of(view.invoice, view.lines)
    if format == "json":
        return out
    return Response(exports.invoice_csv(out), media_type="text/csv")


@router.post("/invoices/{invoice_id}/finalize", response_model=InvoiceOut, tags=TAG_INVOICES)
def finalize_invoice(invoice_id: InvoiceId, ctx: Ctx, caller: Caller) -> InvoiceOut:
    """Rate the month one last time and freeze it (operator admins); finalizing twice is a
    no-op; before the month and its grace period are over, 409 ``period_not_closed``."""
    invoices.finalize_invoice(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        invoice_id=invoice_id,
        grace=_grace(ctx),
        rounding=ctx.settings.billing_rounding,
    )
    view = invoices.get_invoice(db=ctx.db, principal=caller, invoice_id=invoice_id)
    return InvoiceOut.of(view.invoice, view.lines)


@router.post("/invoices/close", response_model=CloseOut, tags=TAG_INVOICES)
def close_period(body: CloseIn, ctx: Ctx, caller: Caller) -> CloseOut:
    """The monthly invoicing run (operator admins): a draft for every org with something to
    bill in ``period`` (default: last month), finalized once its grace period is over
    (``NEOCLOUD_BILLING_GRACE_DAYS``). Running it again changes nothing already finalized."""
    if body.period is None:
        result = invoices.close_previous_month(
            db=ctx.db,
            clock=ctx.clock,
            principal=caller,
            grace=_grace(ctx),
            rounding=ctx.settings.billing_rounding,
        )
    else:
        result = invoices.close_period(
            db=ctx.db,
            clock=ctx.clock,
            principal=caller,
            period=_period(body.period),
            grace=_grace(ctx),
            rounding=ctx.settings.billing_rounding,
        )
    return CloseOut.of(result)


@router.get("/credit-notes", response_model=ListOut[CreditNoteOut], tags=TAG_INVOICES)
def list_credit_notes(
    ctx: Ctx, caller: Caller, org_id: OrgId, paging: Paging
) -> ListOut[CreditNoteOut]:
    """Money given back on finalized invoices that late facts lowered."""
    page = invoices.list_credit_notes(
        db=ctx.db, principal=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[CreditNoteOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


ContractId = Annotated[str, Path(max_length=40)]


@router.post("/contracts", response_model=ContractOut, status_code=201, tags=TAG_AGREEMENTS)
def create_contract(body: ContractCreate, ctx: Ctx, caller: Caller) -> ContractOut:
    """Record a contract for an org (operator admins): committed spend or capacity (true-up),
    prepaid, a reservation charge (upfront or monthly) or a third party's backstop."""
    terms = contract_service.ContractTerms(
        org_id=body.org_id,
        kind=body.kind,
        start_at=ensure_utc(body.start_at) if body.start_at else None,
        end_at=ensure_utc(body.end_at) if body.end_at else None,
        amount=body.amount,
        gpu_model=body.gpu_model,
        gpus=body.gpus,
        rate=body.rate,
        reservation_id=body.reservation_id,
        term=body.term,
        billing=body.billing,
        counterparty=body.counterparty,
        currency=body.currency,
        note=body.note,
    )
    row = contract_service.create_contract(
        db=ctx.db, clock=ctx.clock, principal=caller, terms=terms
    )
    return ContractOut.of(row)


@router.get("/contracts", response_model=ListOut[ContractOut], tags=TAG_AGREEMENTS)
def list_contracts(ctx: Ctx, caller: Caller, org_id: OrgId, paging: Paging) -> ListOut[ContractOut]:
    page = contract_service.list_contracts(
        db=ctx.db, principal=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ContractOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/contracts/{contract_id}", response_model=ContractOut, tags=TAG_AGREEMENTS)
def get_contract(contract_id: ContractId, ctx: Ctx, caller: Caller) -> ContractOut:
    return ContractOut.of(
        contract_service.get_contract(db=ctx.db, principal=caller, contract_id=contract_id)
    )


@router.post("/credits", response_model=CreditGrantOut, status_code=201, tags=TAG_AGREEMENTS)
def grant_credit(body: CreditGrantCreate, ctx: Ctx, caller: Caller) -> CreditGrantOut:
    """Grant credit to an org (operator admins); invoices use it by priority, then earliest
    expiry; promotional credit is never paid out."""
    row = credits.grant_credit(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        org_id=body.org_id,
        amount=body.amount,
        priority=body.priority,
        expires_at=ensure_utc(body.expires_at) if body.expires_at else None,
        paid=body.paid,
        currency=body.currency,
        note=body.note,
    )
    return CreditGrantOut.of(credits.GrantView(row, row.amount))


@router.get("/credits", response_model=ListOut[CreditGrantOut], tags=TAG_AGREEMENTS)
def list_credits(
    ctx: Ctx, caller: Caller, org_id: OrgId, paging: Paging
) -> ListOut[CreditGrantOut]:
    """The org's credit grants with the balance left of each."""
    views, page = credits.list_credits(
        db=ctx.db, principal=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[CreditGrantOut.of(v) for v in views],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


# -- operator revenue reports -----------------------------------------------------------------

TAG_REPORTS: list[str | Enum] = ["billing reports"]


@router.get("/billing/reports/revenue", response_model=RevenueReportOut, tags=TAG_REPORTS)
def revenue_report(
    ctx: Ctx,
    caller: Caller,
    start: Annotated[str, Query(alias="from", pattern=r"^\d{4}-\d{2}$", examples=["2026-01"])],
    end: Annotated[str, Query(alias="to", pattern=r"^\d{4}-\d{2}$", examples=["2026-03"])],
) -> RevenueReportOut:
    """Revenue by org, SKU, class and month from ``from`` to ``to`` (inclusive), re-rated from
    the facts: GPU time, Studio tokens, and backstop agreements' pay for unsold capacity
    (operators)."""
    report = reports.revenue_report(
        db=ctx.db, clock=ctx.clock, principal=caller, start=start, end=end
    )
    return RevenueReportOut.of(report)


@router.get("/billing/reports/backlog", response_model=BacklogReportOut, tags=TAG_REPORTS)
def backlog_report(ctx: Ctx, caller: Caller) -> BacklogReportOut:
    """Remaining contracted value per org now (operators)."""
    return BacklogReportOut.of(reports.backlog_report(db=ctx.db, clock=ctx.clock, principal=caller))


@router.get("/billing/reports/concentration", response_model=ConcentrationOut, tags=TAG_REPORTS)
def concentration_report(
    ctx: Ctx,
    caller: Caller,
    window_days: Annotated[int, Query(ge=1, le=3660, description="trailing window")] = 90,
) -> ConcentrationOut:
    """Customer concentration over the trailing window: shares of revenue, top-1, top-2 and
    the HHI (operators)."""
    conc = reports.concentration_report(
        db=ctx.db, clock=ctx.clock, principal=caller, window_days=window_days
    )
    return ConcentrationOut.of(conc)


@router.get("/billing/reports/utilization", response_model=UtilizationOut, tags=TAG_REPORTS)
def utilization_report(
    ctx: Ctx,
    caller: Caller,
    window_days: Annotated[int, Query(ge=1, le=366, description="trailing window")] = 30,
    step_hours: Annotated[int, Query(ge=1, le=744, description="one point per step")] = 24,
) -> UtilizationOut:
    """The fleet's utilization over time: allocated over in-service GPU-hours per step, from
    the allocation intervals (operators; at most 2,000 points)."""
    points = reports.utilization_series(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        window_days=window_days,
        step_hours=step_hours,
    )
    return UtilizationOut(
        window_days=window_days,
        step_hours=step_hours,
        data=[UtilizationPointOut.model_validate(p, from_attributes=True) for p in points],
    )
