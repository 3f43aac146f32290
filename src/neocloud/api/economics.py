"""Economics routes (operators): project a posted scenario, stress it, or project the live fleet.

The engine is pure (``neocloud.economics``); this router only parses bodies, reads the fleet for
live mode and hands plain data across.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import Field

from neocloud.compute.tables import AllocationRow
from neocloud.economics.live import (
    Interval,
    LiveInputs,
    NodeRecord,
    build_live_scenario,
    choose_utilization,
    measure_usage,
)
from neocloud.economics.report import report, stress_report
from neocloud.economics.scenario import Scenario, parse_scenario
from neocloud.fleet import service as fleet_service
from neocloud.fleet.catalog import find_gpu_model
from neocloud.fleet.domain import NodeState
from neocloud.kernel.errors import ValidationFailed
from neocloud.tenancy.tables import OrgRow
from neocloud.web.deps import AppContext, Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES, RequestModel

router = APIRouter(prefix="/economics", responses=ERROR_RESPONSES)
TAGS: list[str | Enum] = ["economics"]
MAX_PATHS = 20_000  # memory: paths x months x 5 arrays per tranche while it is summed


class ProjectionIn(RequestModel):
    scenario: dict[str, Any] = Field(description="a scenario, as in examples/economics/*.yaml")
    stresses: list[str] = Field(default_factory=list, description="built-in stresses to apply")


class StressIn(RequestModel):
    scenario: dict[str, Any]
    paths: int = Field(10_000, ge=1, le=MAX_PATHS, description="Monte Carlo paths")
    seed: int = Field(0, ge=0)
    pct: float = Field(0.2, gt=0, lt=1, description="tornado swing of each input")


def _scenario(body: dict[str, Any]) -> Scenario:
    try:
        return parse_scenario(body)
    except ValidationFailed as exc:
        exc.param = f"scenario.{exc.param}" if exc.param else "scenario"
        raise


@router.post("/projections", response_model=dict[str, Any], tags=TAGS)
def create_projection(body: ProjectionIn, caller: Caller) -> dict[str, Any]:
    """Project a scenario month by month: P&L, cash flow, debt, cover ratios, returns,
    breakevens and customer concentration (annual rows; monthly too with ``periods: monthly``)."""
    caller.require_operator()
    return report(_scenario(body.scenario), stresses=body.stresses)


@router.post("/stress", response_model=dict[str, Any], tags=TAGS)
def create_stress(body: StressIn, caller: Caller) -> dict[str, Any]:
    """The base case beside every built-in stress, a tornado on NPV and a seeded Monte Carlo
    of the probability that DSCR or EBIT interest cover falls below 1 in any year."""
    caller.require_operator()
    return stress_report(_scenario(body.scenario), paths=body.paths, seed=body.seed, pct=body.pct)


@router.get("/live", response_model=dict[str, Any], tags=TAGS)
def live_projection(
    ctx: Ctx,
    caller: Caller,
    utilization: Annotated[
        float | None,
        Query(ge=0, le=1, description="override; default: measured from allocations"),
    ] = None,
    window_days: Annotated[int, Query(ge=1, le=365, description="trailing window")] = 30,
    forward_years: Annotated[int, Query(ge=1, le=30)] = 5,
    price: Annotated[
        float | None, Query(ge=0, description="$/GPU-hour for every model (default: list price)")
    ] = None,
    ltv: Annotated[float, Query(ge=0, le=1)] = 0.7,
    rate: Annotated[float, Query(ge=0, le=1)] = 0.11,
    stress: Annotated[list[str] | None, Query(description="built-in stresses to apply")] = None,
) -> dict[str, Any]:
    """Project the platform's own fleet forward: cohorts from the nodes (capex, in-service
    date, GPU model and TDP); utilization and customer shares measured from allocation
    intervals over a trailing window; prices from the catalog until billing rates usage."""
    caller.require_operator()
    nodes, capacity = _node_records(ctx)
    now = ctx.clock.now()
    usage = measure_usage(
        _intervals(ctx, now - timedelta(days=window_days), now),
        capacity,
        window_start=now - timedelta(days=window_days),
        window_end=now,
    )
    measured = usage.utilization if usage.gpu_hours > 0 else None
    used, source = choose_utilization(usage, given=utilization)
    prices = {n.gpu_model: price for n in nodes} if price is not None else {}
    inputs = LiveInputs(
        as_of=now.date(),
        forward_years=forward_years,
        utilization=used,
        utilization_source=source,
        price_per_gpu_hour=prices,
        price_source="given" if price is not None else "catalog list price",
        customers=_named(ctx, usage.org_shares),
        concentration_source=(
            "shares of allocated GPU-hours (until billing records revenue)"
            if usage.org_shares
            else "no allocations in the window"
        ),
        ltv=ltv,
        rate=rate,
    )
    live = build_live_scenario(nodes, inputs)
    result = report(live.scenario, stresses=stress or [], notes=live.notes)
    result["object"] = "economics.live"
    result["as_of"] = now.date().isoformat()
    result["sources"] = live.sources
    result["skipped_nodes"] = live.skipped_nodes
    result["usage"] = {
        "window_days": window_days,
        "gpu_hours": round(usage.gpu_hours, 2),
        "capacity_gpu_hours": round(usage.capacity_gpu_hours, 2),
        "measured_utilization": None if measured is None else round(measured, 6),
    }
    return result


def _intervals(ctx: AppContext, start: datetime, end: datetime) -> list[Interval]:
    """Allocation intervals overlapping ``[start, end)`` (compute's facts; billing's later)."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            sa.select(
                AllocationRow.org_id,
                AllocationRow.gpu_count,
                AllocationRow.start_at,
                AllocationRow.end_at,
            ).where(
                AllocationRow.start_at < end,
                sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > start),
            )
        ).all()
    return [Interval(org, gpus, s, e) for org, gpus, s, e in rows]


def _named(ctx: AppContext, shares: dict[str, float]) -> dict[str, float]:
    """Org ids as org slugs (what an operator recognises)."""
    if not shares:
        return {}
    with ctx.db.transaction() as session:
        slugs = dict(
            session.execute(sa.select(OrgRow.id, OrgRow.slug).where(OrgRow.id.in_(shares))).all()
        )
    return {slugs.get(org, org): share for org, share in shares.items()}


def _node_records(ctx: AppContext) -> tuple[list[NodeRecord], list[tuple[int, datetime]]]:
    """Every node not retired, and (GPUs, in service since) for the utilization denominator."""
    records: list[NodeRecord] = []
    capacity: list[tuple[int, datetime]] = []
    after: str | None = None
    while True:
        page = fleet_service.list_nodes(
            db=ctx.db, filters=fleet_service.NodeFilter(), limit=1000, after=after
        )
        for row in page.items:
            if row.state == NodeState.RETIRED.value:
                continue
            model = find_gpu_model(row.gpu_model)
            records.append(
                NodeRecord(
                    gpu_model=row.gpu_model,
                    gpu_count=row.gpu_count,
                    capex=None if row.capex_amount is None else float(row.capex_amount),
                    in_service=None if row.in_service_at is None else row.in_service_at.date(),
                    book_life_years=row.book_life_years,
                    gpu_tdp_w=float(model.tdp_w) if model else 700.0,
                    list_price_per_gpu_hour=(
                        float(model.list_price_per_gpu_hour.amount) if model else 2.0
                    ),
                )
            )
            # Capacity counts from when the platform knew the node: no allocation can predate it.
            since = max(row.in_service_at or row.created_at, row.created_at)
            capacity.append((row.gpu_count, since))
        if not page.has_more:
            return records, capacity
        after = page.next_cursor
