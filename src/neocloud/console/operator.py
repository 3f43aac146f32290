"""The operator's pages: fleet overview, topology heatmap, nodes and node detail with their
actions, the capacity calendar, revenue concentration and the economics dashboard. A tenant's
session gets a 403 page (``signed_in(operator=True)``); what an operator's key may do is still
the API's decision (staff read, admins act)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from neocloud.console.app import Caller, checked_form, console_of, render, signed_in
from neocloud.console.inproc import ApiFailure
from neocloud.console.views import (
    fleet_health_rows,
    fleet_matrix,
    gantt_rows,
    heatmap_cells,
    tenant_cells,
)

router = APIRouter(prefix="/operator", include_in_schema=False)
NODE_ACTIONS = {"cordon", "uncordon", "drain"}
MAX_CALENDAR_NODES = 2_000  # node lookups for the calendar's block rows
MAX_SCENARIO_CHARS = 200_000
SHAPE_TTL = timedelta(minutes=5)
STRESS_PATHS = 500  # Monte Carlo paths for the dashboard (the API allows up to 20,000)


def json_block(value: Any) -> Markup:
    """Data for a page's script, in a ``<script type="application/json">`` body: never executed,
    so the CSP allows it, and ``<`` escaped so no value can close the element."""
    text = json.dumps(value, separators=(",", ":"))
    # JSON with <, > and & escaped as \\u escapes: safe inside the element, still the same JSON.
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))  # noqa: S704


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_page(request: Request, window_days: int = 30) -> Response:
    caller = await signed_in(request, operator=True)
    summary = await caller.api.get("/api/v1/fleet/summary", health=True)
    states, rows, totals = fleet_matrix(summary)
    days = min(max(window_days, 1), 366)
    step = 1 if days <= 2 else 6 if days <= 14 else 24
    use = await caller.api.get(
        "/api/v1/billing/reports/utilization", window_days=days, step_hours=step
    )
    return render(
        request,
        "op_fleet.html",
        caller,
        summary=summary,
        states=states,
        rows=rows,
        totals=totals,
        health_rows=fleet_health_rows(summary, states),
        window_days=days,
        step_hours=step,
        use=json_block(use["data"]),
    )


async def _fleet_shape(request: Request, caller: Caller) -> dict[str, Any]:
    """The fleet's levels and domains (``/fleet/topology``), kept ``SHAPE_TTL`` in the process.

    Which rack sits in which block changes only when servers are imported or registered, and
    at 31,250 nodes the topology query alone takes seconds; the counts by state, which do
    change, are read fresh on every render. Only an operator's page reaches here, and nothing
    of it is shown unless the caller's own ``/fleet/summary`` call is then served by the API."""
    console = console_of(request)
    now = console.clock.now()
    cached = console.shapes.get("topology")
    if cached is not None and now - cached[0] < SHAPE_TTL:
        shape: dict[str, Any] = cached[1]
        return shape
    topology: dict[str, Any] = await caller.api.get("/api/v1/fleet/topology")
    console.shapes["topology"] = (now, topology)
    return topology


@router.get("/heatmap", response_class=HTMLResponse)
async def heatmap_page(
    request: Request, opening: Annotated[str | None, Query(alias="open")] = None
) -> Response:
    """The fleet at one cell per block (the level above the leaf); ``open`` names a domain two
    levels above the leaf (a fabric) whose racks are then drawn one cell each. Racks are read
    on demand: the whole fleet by rack is ~8,000 lines to count, join and render, a block view
    ~1,000 and a fabric's racks at most a few hundred."""
    caller = await signed_in(request, operator=True)
    topology = await _fleet_shape(request, caller)
    levels: list[str] = topology["levels"]
    leaf = levels[-1] if levels else "rack"
    opened = opening[:63] if opening else None  # a domain name is at most 63 characters
    query: dict[str, Any] = {"group_by": leaf, "health": True}
    if len(levels) < 3:  # too shallow to fold: every leaf cell at once
        cell_level, drill, opened = leaf, None, None
    elif opened is None:
        cell_level, drill = levels[-2], levels[-3]
        query["group_by"] = cell_level
    else:
        cell_level, drill = leaf, None
        query.update(within_level=levels[-3], within=opened)
    summary = await caller.api.get("/api/v1/fleet/summary", **query)
    data = heatmap_cells(topology, summary, cell_level)
    where = {k: v for k, v in query.items() if k in ("within_level", "within")}
    tenants = await caller.api.get("/api/v1/capacity/tenants", group_by=cell_level, **where)
    gpus: dict[str, int] = defaultdict(int)
    for line in summary["data"]:
        if line["domain"] is not None:
            gpus[line["domain"]] += int(line["gpus"])
    data.update(tenant_cells(tenants, gpus))
    data["drill"] = drill  # clicking a cell opens the domain of this level above it
    return render(
        request,
        "op_heatmap.html",
        caller,
        data=json_block(data),
        cells=len(data["cells"]),
        nodes=summary["total_nodes"],
        gpus=summary["total_gpus"],
        leaf=cell_level,
        opened=opened,
        opened_level=levels[-3] if opened else None,
        drill=drill,
        levels_leaf=leaf,
    )


@router.get("/nodes", response_class=HTMLResponse)
async def nodes_page(request: Request) -> Response:
    caller = await signed_in(request, operator=True)
    allowed = ("rack", "block", "fabric", "state", "health", "gpu_model", "hostname")
    filters: dict[str, Any] = {
        k: v[:64] for k, v in request.query_params.items() if k in allowed and v
    }
    nodes = await caller.api.get("/api/v1/nodes", limit=200, **filters)
    return render(request, "op_nodes.html", caller, nodes=nodes["data"], filters=filters)


@router.get("/nodes/{node_id}", response_class=HTMLResponse)
async def node_page(request: Request, node_id: str) -> Response:
    caller = await signed_in(request, operator=True)
    node = await caller.api.get(f"/api/v1/nodes/{node_id}")
    events = await caller.api.get(f"/api/v1/nodes/{node_id}/events", limit=50)
    return render(request, "op_node.html", caller, node=node, events=events["data"])


@router.post("/nodes/{node_id}/action")
async def node_action(request: Request, node_id: str) -> Response:
    caller = await signed_in(request, operator=True)
    form = await checked_form(request, caller)
    action = form.get("action", "")
    body = {"reason": form["reason"][:200]} if form.get("reason") else {}
    if action in NODE_ACTIONS:
        await caller.api.post(f"/api/v1/nodes/{node_id}/{action}", body)
    elif action == "repair":
        await caller.api.post(f"/api/v1/nodes/{node_id}/transition", {"to": "repair", **body})
    else:
        raise ApiFailure(422, "unknown_action", f"no node action {action[:32]!r}", "action")
    return RedirectResponse(f"/operator/nodes/{node_id}", status_code=303)


@router.get("/calendar", response_class=HTMLResponse)
async def calendar_page(request: Request) -> Response:
    caller = await signed_in(request, operator=True)
    reservations = (await caller.api.get("/api/v1/reservations", limit=500))["data"]
    blocks: dict[str, str] = {}
    wanted = sorted({n for r in reservations for n in r["node_ids"]})[:MAX_CALENDAR_NODES]
    for node_id in wanted:
        node = await caller.api.get(f"/api/v1/nodes/{node_id}")
        topo = node.get("topology", {})
        blocks[node_id] = f"{topo.get('fabric', '?')} / {topo.get('block', '?')}"
    rows = gantt_rows(reservations, blocks)
    return render(request, "op_calendar.html", caller, rows=rows, data=json_block(rows))


@router.get("/revenue", response_class=HTMLResponse)
async def revenue_page(request: Request, window_days: int = 90) -> Response:
    caller = await signed_in(request, operator=True)
    days = min(max(window_days, 1), 3660)
    conc = await caller.api.get("/api/v1/billing/reports/concentration", window_days=days)
    return render(request, "op_revenue.html", caller, c=conc, window_days=days)


@router.get("/economics", response_class=HTMLResponse)
async def economics_page(request: Request) -> Response:
    caller = await signed_in(request, operator=True)
    try:
        live = await caller.api.get("/api/v1/economics/live")
    except ApiFailure as exc:
        if exc.status >= 500 or exc.status in (401, 403):
            raise
        # No live projection (no node carries capex, say): the scenario form still works.
        return render(request, "op_economics.html", caller, r=None, live_error=exc.message)
    return render(
        request, "op_economics.html", caller, r=live, data=json_block(live["annual"]), stress=None
    )


@router.post("/economics/stress", response_class=HTMLResponse)
async def economics_stress(request: Request) -> Response:
    """Stress a scenario file pasted or uploaded as text: the stress table and the tornado."""
    caller = await signed_in(request, operator=True)
    form = await checked_form(request, caller)
    text = form.get("scenario", "")[:MAX_SCENARIO_CHARS]
    try:
        scenario = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ApiFailure(
            422, "invalid_yaml", f"the scenario is not YAML: {exc}", "scenario"
        ) from exc
    if not isinstance(scenario, dict):
        raise ApiFailure(422, "invalid_scenario", "the scenario is a YAML mapping", "scenario")
    # YAML's dates become ISO strings, as the CLI sends them.
    scenario = json.loads(json.dumps(scenario, default=str))
    report = await caller.api.post("/api/v1/economics/projections", {"scenario": scenario})
    stress = await caller.api.post(
        "/api/v1/economics/stress", {"scenario": scenario, "paths": STRESS_PATHS}
    )
    return render(
        request,
        "op_economics.html",
        caller,
        r=report,
        data=json_block(report["annual"]),
        stress=stress,
        tornado=json_block(stress["tornado"]),
    )
