"""Billing routes: price books (operator publishes), usage events, invoice previews."""

from __future__ import annotations

import csv
import io
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from neocloud.billing import invoices, service
from neocloud.billing.rating import Period
from neocloud.billing.schemas import (
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
from neocloud.web.deps import Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAG_PRICES: list[str | Enum] = ["price books"]
TAG_USAGE: list[str | Enum] = ["usage"]
TAG_INVOICES: list[str | Enum] = ["invoices"]
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
    """A batch of metered events for the caller's org (operator admins: any ``org_id``);
    replays of (org, source, id) are counted as duplicates; events at most 35 days late."""
    org = org_id or caller.org_id
    caller.require_org_role(org, Role.MEMBER)
    events = [
        service.UsageEvent(e.id, e.source, e.type, e.subject, ensure_utc(e.time), e.data)
        for e in body.events
    ]
    result = service.record_usage_events(db=ctx.db, clock=ctx.clock, org_id=org, events=events)
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
    preview = service.preview_invoice(
        db=ctx.db, clock=ctx.clock, principal=caller, org_id=org_id, period=_period(period)
    )
    out = InvoicePreviewOut.of(preview)
    if format == "json":
        return out
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = ("sku", "project_id", "gpu_seconds", "gpu_hours", "unit_price", "amount")
    writer.writerow((*columns, "currency", "fact_ids"))
    for ln in out.lines:
        writer.writerow(
            (
                ln.sku,
                ln.project_id or "",
                ln.gpu_seconds,
                ln.gpu_hours,
                ln.unit_price.amount,
                ln.amount.amount,
                ln.amount.currency,
                " ".join(ln.fact_ids),
            )
        )
    for tl in out.token_lines:
        sku = f"tokens.{tl.model}" + (".batch" if tl.batch else "")
        counts = f"{tl.input_tokens} in / {tl.output_tokens} out"
        writer.writerow(
            (sku, "", "", counts, "", tl.amount.amount, tl.amount.currency, " ".join(tl.fact_ids))
        )
    return Response(buf.getvalue(), media_type="text/csv")


InvoiceId = Annotated[str, Path(max_length=40)]


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
    )
    view = invoices.get_invoice(db=ctx.db, principal=caller, invoice_id=inv_id)
    return InvoiceOut.of(view.invoice, view.lines)


@router.get("/invoices", response_model=ListOut[InvoiceOut], tags=TAG_INVOICES)
def list_invoices(ctx: Ctx, caller: Caller, org_id: OrgId) -> ListOut[InvoiceOut]:
    """The org's invoices by month (without lines)."""
    rows = invoices.list_invoices(db=ctx.db, principal=caller, org_id=org_id)
    return ListOut(data=[InvoiceOut.of(r) for r in rows], has_more=False)


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
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        (
            "invoice_id",
            "period",
            "kind",
            "usage_period",
            "sku",
            "project_id",
            "gpu_seconds",
            "unit_price",
            "amount",
            "currency",
            "fact_ids",
        )
    )
    for ln in out.lines or []:
        writer.writerow(
            (
                out.id,
                out.period,
                ln.kind,
                ln.usage_period,
                ln.sku,
                ln.project_id or "",
                ln.gpu_seconds,
                ln.unit_price.amount,
                ln.amount.amount,
                ln.amount.currency,
                " ".join(ln.fact_ids),
            )
        )
    return Response(buf.getvalue(), media_type="text/csv")


@router.post("/invoices/{invoice_id}/finalize", response_model=InvoiceOut, tags=TAG_INVOICES)
def finalize_invoice(invoice_id: InvoiceId, ctx: Ctx, caller: Caller) -> InvoiceOut:
    """Rate the month one last time and freeze it (operator admins); finalizing twice is a
    no-op; before the month and its grace period are over, 409 ``period_not_closed``."""
    invoices.finalize_invoice(db=ctx.db, clock=ctx.clock, principal=caller, invoice_id=invoice_id)
    view = invoices.get_invoice(db=ctx.db, principal=caller, invoice_id=invoice_id)
    return InvoiceOut.of(view.invoice, view.lines)
