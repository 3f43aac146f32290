"""Wire shapes of the operator revenue reports (``/billing/reports/…``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from neocloud.billing.report_figures import (
    BacklogReport,
    Concentration,
    RevenueReport,
    SkippedOrg,
)
from neocloud.kernel.money import Money
from neocloud.web.schemas import MoneyOut, ResponseModel


def _money(amount: Decimal, currency: str) -> MoneyOut:
    return MoneyOut.of(Money(amount, currency))


class AmountOut(ResponseModel):
    """One key (an org id, SKU, class or month) and its amount."""

    key: str
    name: str | None = Field(None, description="the org's slug, for org keys")
    amount: MoneyOut


def _amounts(
    values: Mapping[str, Decimal], currency: str, names: Mapping[str, str] | None = None
) -> list[AmountOut]:
    return [
        AmountOut(key=k, name=(names or {}).get(k), amount=_money(v, currency))
        for k, v in values.items()
    ]


class SkippedOrgOut(ResponseModel):
    """An org left out of a report: its figures cannot be computed from its stored facts."""

    org_id: str
    name: str | None = Field(None, description="the org's slug")
    code: str = Field(examples=["amount_out_of_range"])
    message: str


def _skipped(items: Sequence[SkippedOrg], names: Mapping[str, str]) -> list[SkippedOrgOut]:
    return [
        SkippedOrgOut(org_id=k.org_id, name=names.get(k.org_id), code=k.code, message=k.message)
        for k in items
    ]


SKIPPED_DOC = "orgs left out of the figures because their figures cannot be computed"


class RevenueLineOut(ResponseModel):
    month: str = Field(examples=["2026-03"])
    org_id: str
    sku: str = Field(examples=["H100-SXM-80GB.on_demand"])
    cls: str = Field(
        examples=["on_demand"], description="on_demand, spot, reserved, tokens or backstop"
    )
    amount: MoneyOut


class RevenueReportOut(ResponseModel):
    object: Literal["billing.revenue_report"] = "billing.revenue_report"
    start: str = Field(description="first month, YYYY-MM")
    end: str = Field(description="last month, YYYY-MM, inclusive")
    as_of: datetime
    total: MoneyOut
    by_org: list[AmountOut]
    by_sku: list[AmountOut]
    by_class: list[AmountOut]
    by_month: list[AmountOut]
    lines: list[RevenueLineOut]
    skipped: list[SkippedOrgOut] = Field(default_factory=list, description=SKIPPED_DOC)

    @classmethod
    def of(cls, r: RevenueReport) -> RevenueReportOut:
        cur = r.currency
        return cls(
            start=r.start,
            end=r.end,
            as_of=r.as_of,
            total=_money(r.total, cur),
            by_org=_amounts(r.by("org_id"), cur, r.names),
            by_sku=_amounts(r.by("sku"), cur),
            by_class=_amounts(r.by("cls"), cur),
            by_month=dict_sorted_months(r.by("month"), cur),
            lines=[
                RevenueLineOut(
                    month=ln.month,
                    org_id=ln.org_id,
                    sku=ln.sku,
                    cls=ln.cls,
                    amount=_money(ln.amount, cur),
                )
                for ln in r.lines
            ],
            skipped=_skipped(r.skipped, r.names),
        )


def dict_sorted_months(values: Mapping[str, Decimal], currency: str) -> list[AmountOut]:
    return _amounts(dict(sorted(values.items())), currency)


class BacklogReportOut(ResponseModel):
    object: Literal["billing.backlog_report"] = "billing.backlog_report"
    at: datetime
    total: MoneyOut
    by_org: list[AmountOut] = Field(description="remaining contracted value, largest first")
    skipped: list[SkippedOrgOut] = Field(default_factory=list, description=SKIPPED_DOC)

    @classmethod
    def of(cls, r: BacklogReport, currency: str = "USD") -> BacklogReportOut:
        return cls(
            at=r.at,
            total=_money(r.total, currency),
            by_org=_amounts(r.by_org, currency, r.names),
            skipped=_skipped(r.skipped, r.names),
        )


class CustomerShareOut(ResponseModel):
    org_id: str
    name: str | None = Field(None, description="the org's slug")
    revenue: MoneyOut
    share: str = Field(examples=["0.500000"], description="fraction of the window's revenue")


class ConcentrationOut(ResponseModel):
    object: Literal["billing.concentration_report"] = "billing.concentration_report"
    window_start: datetime
    window_end: datetime
    total: MoneyOut
    top1: str = Field(examples=["0.500000"], description="largest customer's share")
    top2: str = Field(examples=["0.800000"], description="two largest customers' share")
    hhi: str = Field(examples=["3800.00"], description="sum of squared percentage shares")
    largest: str | None
    customers: list[CustomerShareOut]
    skipped: list[SkippedOrgOut] = Field(default_factory=list, description=SKIPPED_DOC)

    @classmethod
    def of(cls, c: Concentration) -> ConcentrationOut:
        return cls(
            window_start=c.window_start,
            window_end=c.window_end,
            total=_money(c.total, c.currency),
            top1=str(c.top1),
            top2=str(c.top2),
            hhi=str(c.hhi),
            largest=c.largest,
            customers=[
                CustomerShareOut(
                    org_id=org,
                    name=c.names.get(org),
                    revenue=_money(c.revenue[org], c.currency),
                    share=str(share),
                )
                for org, share in c.shares.items()
            ],
            skipped=_skipped(c.skipped, c.names),
        )


class UtilizationPointOut(ResponseModel):
    start: datetime
    end: datetime
    gpu_hours: float = Field(description="allocated GPU-hours in the step")
    capacity_gpu_hours: float = Field(description="GPU-hours of the nodes in service")
    utilization: float | None = Field(description="their ratio; null with no node in service")


class UtilizationOut(ResponseModel):
    object: Literal["billing.utilization"] = "billing.utilization"
    window_days: int
    step_hours: int
    data: list[UtilizationPointOut]
