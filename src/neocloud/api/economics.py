"""Economics routes (operators): project a posted scenario, stress it, or project the live fleet.

The engine is pure (``neocloud.economics``); this router only parses bodies and hands plain data
across. Live mode's inputs are assembled by ``billing.reports`` (fleet, allocations, billing).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from neocloud.billing import reports
from neocloud.economics.live import build_live_scenario
from neocloud.economics.report import report, stress_report
from neocloud.economics.scenario import Scenario, parse_scenario
from neocloud.kernel.errors import ValidationFailed
from neocloud.web.deps import Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES, RequestModel

router = APIRouter(prefix="/economics", responses=ERROR_RESPONSES)
TAGS: list[str | Enum] = ["economics"]
MAX_PATHS = 20_000  # memory: paths x months x 5 arrays per tranche while it is summed
MAX_STRESSES = 32  # each is a whole projection; there are fewer built-in ones than this


class ProjectionIn(RequestModel):
    scenario: dict[str, Any] = Field(description="a scenario, as in examples/economics/*.yaml")
    stresses: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=MAX_STRESSES,
        description=f"built-in stresses to apply (at most {MAX_STRESSES})",
    )


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
        float | None,
        Query(ge=0, description="$/GPU-hour for every model (default: realized from billing)"),
    ] = None,
    ltv: Annotated[float, Query(ge=0, le=1)] = 0.7,
    rate: Annotated[float, Query(ge=0, le=1)] = 0.11,
    stress: Annotated[list[str] | None, Query(description="built-in stresses to apply")] = None,
) -> dict[str, Any]:
    """Project the platform's own fleet forward: cohorts from the nodes (capex, in-service
    date, GPU model and TDP); utilization measured from allocation intervals over a trailing
    window; prices realized in billing (average price of the GPU-hours sold), customers'
    shares of billed revenue, the backlog and concentration from billing. The operator's own
    orgs are not customers: their usage is left out of all of it and shown under
    ``internal_usage``."""
    caller.require_operator()
    data = reports.economics_live_data(db=ctx.db, clock=ctx.clock, window_days=window_days)
    inputs = reports.live_inputs(
        data,
        utilization=utilization,
        price=price,
        forward_years=forward_years,
        ltv=ltv,
        rate=rate,
    )
    live = build_live_scenario(data.nodes, inputs)
    result = report(live.scenario, stresses=stress or [], notes=live.notes)
    usage, billed, internal = data.usage, data.billed, data.internal
    measured = usage.utilization if usage.gpu_hours > 0 else None
    result["object"] = "economics.live"
    result["as_of"] = data.as_of.date().isoformat()
    result["sources"] = live.sources
    result["skipped_nodes"] = live.skipped_nodes
    result["usage"] = {
        "window_days": window_days,
        "gpu_hours": round(usage.gpu_hours, 2),
        "capacity_gpu_hours": round(usage.capacity_gpu_hours, 2),
        "measured_utilization": None if measured is None else round(measured, 6),
    }
    result["billing"] = {
        "window_days": window_days,
        "currency": billed.currency,
        "revenue": round(billed.revenue, 2),
        "revenue_by_class": {k: round(v, 2) for k, v in billed.revenue_by_class.items()},
        "revenue_by_customer": {k: round(v, 2) for k, v in billed.revenue_by_customer.items()},
        "price_per_gpu_hour": {k: round(v, 4) for k, v in billed.price_by_model.items()},
        "backlog": round(billed.backlog, 2),
        "backlog_by_customer": {k: round(v, 2) for k, v in billed.backlog_by_customer.items()},
        "top1": round(billed.top1, 6),
        "top2": round(billed.top2, 6),
        "hhi": round(billed.hhi, 2),
        "largest": billed.largest,
    }
    result["internal_usage"] = {
        "excluded": True,
        "orgs": list(internal.orgs),
        "currency": billed.currency,
        "revenue": round(internal.revenue, 2),
        "gpu_hours": round(internal.gpu_hours, 2),
    }
    return result
