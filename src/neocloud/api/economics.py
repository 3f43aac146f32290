"""Economics routes (operators): project a posted scenario, stress it, or project the live fleet.

The engine is pure (``neocloud.economics``); this router only parses bodies, reads the fleet for
live mode and hands plain data across.
"""

from __future__ import annotations

from datetime import date
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from neocloud.economics.live import LiveInputs, NodeRecord, build_live_scenario
from neocloud.economics.report import report, stress_report
from neocloud.economics.scenario import Scenario, parse_scenario
from neocloud.fleet import service as fleet_service
from neocloud.fleet.catalog import find_gpu_model
from neocloud.fleet.domain import NodeState
from neocloud.kernel.errors import ValidationFailed
from neocloud.web.deps import AppContext, Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES, RequestModel

router = APIRouter(prefix="/economics", responses=ERROR_RESPONSES)
TAGS: list[str | Enum] = ["economics"]
MAX_PATHS = 100_000


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
    utilization: Annotated[float, Query(ge=0, le=1, description="assumed until billing")] = 0.7,
    forward_years: Annotated[int, Query(ge=1, le=30)] = 5,
    price: Annotated[
        float | None, Query(ge=0, description="$/GPU-hour for every model (default: list price)")
    ] = None,
    ltv: Annotated[float, Query(ge=0, le=1)] = 0.7,
    rate: Annotated[float, Query(ge=0, le=1)] = 0.11,
    stress: Annotated[list[str] | None, Query(description="built-in stresses to apply")] = None,
) -> dict[str, Any]:
    """Project the platform's own fleet forward: cohorts from the nodes (capex, in-service
    date, GPU model and TDP), utilization and prices assumed until billing measures them."""
    caller.require_operator()
    nodes = _node_records(ctx)
    today = ctx.clock.now().date()
    prices = {n.gpu_model: price for n in nodes} if price is not None else {}
    inputs = LiveInputs(
        as_of=today,
        forward_years=forward_years,
        utilization=utilization,
        price_per_gpu_hour=prices,
        price_source="given" if price is not None else "catalog list price",
        ltv=ltv,
        rate=rate,
    )
    live = build_live_scenario(nodes, inputs)
    result = report(live.scenario, stresses=stress or [], notes=live.notes)
    result["object"] = "economics.live"
    result["as_of"] = today.isoformat()
    result["sources"] = live.sources
    result["skipped_nodes"] = live.skipped_nodes
    return result


def _node_records(ctx: AppContext) -> list[NodeRecord]:
    records: list[NodeRecord] = []
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
                    in_service=_date(row.in_service_at),
                    book_life_years=row.book_life_years,
                    gpu_tdp_w=float(model.tdp_w) if model else 700.0,
                    list_price_per_gpu_hour=(
                        float(model.list_price_per_gpu_hour.amount) if model else 2.0
                    ),
                )
            )
        if not page.has_more:
            return records
        after = page.next_cursor


def _date(value: Any) -> date | None:
    return None if value is None else value.date()
