"""Fleet routes: the GPU catalog (any caller), nodes, lifecycle actions, summary, imports
(operator only; changes need an operator admin)."""

from __future__ import annotations

import json
from collections import Counter
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from neocloud.fleet import node_control, service
from neocloud.fleet.catalog import CATALOG, resolve_gpu_model
from neocloud.fleet.domain import OPERATOR_TARGETS, NodeRole
from neocloud.fleet.node_drivers import check_driver
from neocloud.fleet.registration import NodeRegistration, register_node
from neocloud.fleet.schemas import (
    DomainOut,
    FleetImportIn,
    FleetImportOut,
    FleetSummaryOut,
    GpuModelOut,
    HealthCheckOut,
    HealthReportIn,
    NodeActionIn,
    NodeCreate,
    NodeEventOut,
    NodeInventoryOut,
    NodeOut,
    NodePowerIn,
    NodePowerOut,
    NodeTransitionIn,
    SummaryLineOut,
    TopologyOut,
)
from neocloud.fleet.spec import parse_spec
from neocloud.kernel.errors import InvalidRequest, ValidationFailed
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAG_NODES: list[str | Enum] = ["nodes"]
TAG_FLEET: list[str | Enum] = ["fleet"]
NodeId = Annotated[str, Path(max_length=40)]
Filter = Annotated[str | None, Query(max_length=253)]
_NODE_PARAMS = {"role", "gpu_model", "state", "health", "hostname", "label", "limit", "after"}
# Bounds on the node list's free-form filters (labels, topology levels): each one is a join.
MAX_FILTERS = 16
MAX_FILTER_CHARS = 320  # a label key (63) and value (253), with room for the "="


def _check_filters(param: str, items: list[str]) -> None:
    """Refuse more than ``MAX_FILTERS`` filters of a kind, or one longer than allowed."""
    if len(items) > MAX_FILTERS:
        raise ValidationFailed(
            f"at most {MAX_FILTERS} {param} filters, got {len(items)}", param=param
        )
    for item in items:
        if len(item) > MAX_FILTER_CHARS:
            raise ValidationFailed(
                f"a {param} filter is at most {MAX_FILTER_CHARS} characters", param=param
            )


_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


def _actor(caller: Any) -> str:
    return str(caller.key_id)


@router.get("/gpu-models", response_model=ListOut[GpuModelOut], tags=TAG_FLEET)
def list_gpu_models(caller: Caller) -> ListOut[GpuModelOut]:
    """The GPU catalog: memory, TDP, NVLink domain, peak bf16, HBM bandwidth, list price."""
    return ListOut(data=[GpuModelOut.of(m) for m in CATALOG], has_more=False)


@router.get("/gpu-models/{model}", response_model=GpuModelOut, tags=TAG_FLEET)
def get_gpu_model(model: Annotated[str, Path(max_length=64)], caller: Caller) -> GpuModelOut:
    """One catalog entry, by id or short name (``H100``)."""
    return GpuModelOut.of(resolve_gpu_model(model, param="model"))


@router.get("/nodes", response_model=ListOut[NodeOut], tags=TAG_NODES)
def list_nodes(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    role: Filter = None,
    gpu_model: Filter = None,
    state: Filter = None,
    health: Filter = None,
    hostname: Filter = None,
    label: Annotated[
        list[str] | None,
        Query(
            description=f"k=v; repeat for several (at most {MAX_FILTERS}, each at most "
            f"{MAX_FILTER_CHARS} characters)"
        ),
    ] = None,
    region: Filter = None,
    zone: Filter = None,
    fabric: Filter = None,
    block: Filter = None,
    rack: Filter = None,
) -> ListOut[NodeOut]:
    """Nodes, ordered by id, filtered by role (gpu, storage, service), model (``H100``
    works), state, health, hostname,
    labels and any topology level of the fleet (``?fabric=us-east-1a-ib01``)."""
    caller.require_operator()
    domains = {k: v for k, v in request.query_params.items() if k not in _NODE_PARAMS}
    _check_filters("label", label or [])
    _check_filters("topology", [f"{k}={v}" for k, v in domains.items()])
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationFailed("label filters are key=value", param="label")
        labels[key.strip()] = value.strip()
    filters = service.NodeFilter(
        role=role,
        gpu_model=gpu_model,
        state=state,
        health=health,
        hostname=hostname,
        domains=domains,
        labels=labels,
    )
    page = service.list_nodes(db=ctx.db, filters=filters, limit=paging.limit, after=paging.after)
    return ListOut(
        data=[NodeOut.of(n) for n in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.post("/nodes", response_model=NodeOut, status_code=201, tags=TAG_NODES)
def create_node(request: Request, body: NodeCreate, ctx: Ctx, caller: Caller) -> NodeOut:
    """Register a server (operator admin): it starts ``enrolled``, and burn-in checks it
    through its driver (reachable, disk writable, the declared GPUs visible; a redfish node is
    powered on through its BMC and its health read) before any tenant can get it. The
    credentials (``driver_config.private_key``; ``bmc_username`` and ``bmc_password``) are
    write-only: sealed at rest with the platform's secret key, never returned (``credentials``
    names what is set), logged or audited. A hostname in use is a 409."""
    caller.require_operator(write=True)
    settings = check_driver(body.driver, body.driver_config)
    registration = NodeRegistration(
        hostname=body.hostname,
        role=NodeRole(body.role),
        gpu_model=body.gpu_model,
        gpu_count=body.gpu_count,
        vcpus=body.vcpus,
        ram_gib=body.ram_gib,
        nvme_gib=body.nvme_gib,
        topology=dict(body.topology),
        driver=settings,
        labels=dict(body.labels),
    )
    row = register_node(
        db=ctx.db,
        clock=ctx.clock,
        box=request.app.state.secret_box,
        node=registration,
        actor=_actor(caller),
    )
    return NodeOut.of(row)


@router.get("/nodes/{node_id}", response_model=NodeOut, tags=TAG_NODES)
def get_node(node_id: NodeId, ctx: Ctx, caller: Caller) -> NodeOut:
    caller.require_operator()
    return NodeOut.of(service.get_node(db=ctx.db, node_id=node_id))


@router.get("/nodes/{node_id}/events", response_model=ListOut[NodeEventOut], tags=TAG_NODES)
def list_node_events(
    node_id: NodeId, ctx: Ctx, caller: Caller, paging: Paging
) -> ListOut[NodeEventOut]:
    """Every lifecycle transition of the node, oldest first."""
    caller.require_operator()
    page = service.list_node_events(
        db=ctx.db, node_id=node_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[NodeEventOut.of(e) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/nodes/{node_id}/health-checks", response_model=ListOut[HealthCheckOut], tags=TAG_NODES
)
def list_health_checks(
    node_id: NodeId, ctx: Ctx, caller: Caller, paging: Paging
) -> ListOut[HealthCheckOut]:
    """Every reported check result of the node, oldest first."""
    caller.require_operator()
    page = service.list_health_checks(
        db=ctx.db, node_id=node_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[HealthCheckOut.of(c) for c in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


def _action(name: str, fn: Any, doc: str) -> None:
    def handler(
        node_id: NodeId, ctx: Ctx, caller: Caller, body: NodeActionIn | None = None
    ) -> NodeOut:
        caller.require_operator(write=True)
        reason = body.reason if body else None
        row = fn(db=ctx.db, clock=ctx.clock, node_id=node_id, reason=reason, actor=_actor(caller))
        return NodeOut.of(row)

    handler.__name__ = f"{name}_node"
    handler.__doc__ = doc
    router.post(f"/nodes/{{node_id}}/{name}", response_model=NodeOut, tags=TAG_NODES)(handler)


_action(
    "cordon",
    service.cordon_node,
    "No new work on the node. An idle node is cordoned at once; a busy one drains: its "
    "workload keeps running and the node lands in `cordoned` once released and wiped.",
)
_action(
    "uncordon",
    service.uncordon_node,
    "Lift a cordon: a cordoned node becomes available; a draining one resumes its work.",
)
_action(
    "drain",
    service.drain_node,
    "Cordon the node and ask for its workload to be evicted (`drain_requested_at`).",
)
_action(
    "retire",
    service.retire_node,
    "Take the node out of the fleet for good; only from idle, cordoned, maintenance, "
    "repair or failed states.",
)


@router.post("/nodes/{node_id}/transition", response_model=NodeOut, tags=TAG_NODES)
def transition_node(node_id: NodeId, body: NodeTransitionIn, ctx: Ctx, caller: Caller) -> NodeOut:
    """Move a node through the lifecycle table (burn-in done, maintenance, repair, …);
    an illegal move answers 409 with the allowed states in ``error.details.allowed``."""
    caller.require_operator(write=True)
    if body.to not in OPERATOR_TARGETS:
        raise ValidationFailed(
            f"{body.to.value} is not set by hand (the compute context drives workload states; "
            "cordon and drain have their own actions); operators move nodes to: "
            + ", ".join(sorted(s.value for s in OPERATOR_TARGETS)),
            code="not_an_operator_move",
            param="to",
        )
    row = service.transition_node(
        db=ctx.db,
        clock=ctx.clock,
        node_id=node_id,
        to=body.to,
        reason=body.reason,
        actor=_actor(caller),
    )
    return NodeOut.of(row)


@router.post("/nodes/{node_id}/power", response_model=NodePowerOut, tags=TAG_NODES)
def power_node(
    request: Request, node_id: NodeId, body: NodePowerIn, ctx: Ctx, caller: Caller
) -> NodePowerOut:
    """Switch the node's power through its driver, now (operator admin): ``on``, ``off`` (hard)
    or ``reset`` (hard). Answers once the driver (the BMC) accepted it, with the seconds the
    machine takes. 409: ``power_not_supported`` (an ssh node: no BMC), ``node_in_use`` (a
    tenant's workload is on it; ``force`` overrides), ``node_retired``, ``power_failed`` (the
    BMC refused or did not answer: the message says why)."""
    caller.require_operator(write=True)
    result = node_control.power_node(
        db=ctx.db,
        console=request.app.state.node_console,
        node_id=node_id,
        action=body.action,
        force=body.force,
    )
    return NodePowerOut.of(result)


@router.get("/nodes/{node_id}/inspect", response_model=NodeInventoryOut, tags=TAG_NODES)
def inspect_node(request: Request, node_id: NodeId, ctx: Ctx, caller: Caller) -> NodeInventoryOut:
    """The node's inventory, read now through its driver: a redfish node's BMC (model, serial,
    CPUs, memory, NICs, power, health, boot, virtual media), an ssh node over SSH (hostname,
    kernel, CPUs, memory, nvidia-smi's GPUs), a simulated node's declared facts (``simulated``).
    409 ``inspect_failed``: the node or its BMC could not be read (the message says why)."""
    caller.require_operator()
    node, inventory = node_control.inspect_node(
        db=ctx.db, console=request.app.state.node_console, node_id=node_id
    )
    return NodeInventoryOut.of(node, inventory)


@router.post("/nodes/{node_id}/health", response_model=NodeOut, tags=TAG_NODES)
def report_health(node_id: NodeId, body: HealthReportIn, ctx: Ctx, caller: Caller) -> NodeOut:
    """Report check results; a failing check moves the node to ``failed``."""
    caller.require_operator(write=True)
    checks = [service.CheckResult(c.name, c.status, c.message) for c in body.checks]
    row = service.report_health(
        db=ctx.db, clock=ctx.clock, node_id=node_id, checks=checks, actor=_actor(caller)
    )
    return NodeOut.of(row)


@router.get("/fleet/summary", response_model=FleetSummaryOut, tags=TAG_FLEET)
def fleet_summary(
    ctx: Ctx,
    caller: Caller,
    group_by: Annotated[str | None, Query(max_length=32, description="a topology level")] = None,
    health: Annotated[bool, Query(description="also group by node health")] = False,
    within_level: Annotated[
        str | None, Query(max_length=32, description="count only inside one domain: its level")
    ] = None,
    within: Annotated[
        str | None, Query(max_length=63, description="that domain's name (with within_level)")
    ] = None,
) -> Response:
    """Node and GPU counts by GPU model x state (x health) (x domain of ``group_by``), over the
    fleet or within one domain."""
    caller.require_operator()
    if (within_level is None) != (within is None):
        raise ValidationFailed(
            "within and within_level go together",
            code="missing_field",
            param="within" if within is None else "within_level",
        )
    inside = (within_level, within) if within_level is not None and within is not None else None
    lines = service.fleet_summary(db=ctx.db, group_by=group_by, by_health=health, within=inside)
    by_state: Counter[str] = Counter()
    for line in lines:
        by_state[line.state] += line.nodes
    out = FleetSummaryOut(
        group_by=group_by,
        total_nodes=sum(x.nodes for x in lines),
        total_gpus=sum(x.gpus for x in lines),
        by_state=dict(sorted(by_state.items())),
        data=[SummaryLineOut.of(x) for x in lines],
    )
    # Serialized here, once: by rack a 31,250-node fleet is ~8,000 lines, and letting FastAPI
    # dump and re-validate them against the response model doubled the endpoint's time.
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/fleet/topology", response_model=TopologyOut, tags=TAG_FLEET)
def fleet_topology(
    ctx: Ctx, caller: Caller, level: Annotated[str | None, Query(max_length=32)] = None
) -> TopologyOut:
    """The fleet's levels and its domains, each with node and GPU counts."""
    caller.require_operator()
    levels, domains = service.topology(db=ctx.db, level=level)
    return TopologyOut(levels=levels, domains=[DomainOut.of(d) for d in domains])


@router.post(
    "/fleet/imports",
    response_model=FleetImportOut,
    status_code=201,
    tags=TAG_FLEET,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": FleetImportIn.model_json_schema()},
            }
        }
    },
)
async def import_fleet(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    initial_state: Annotated[str | None, Query(max_length=16)] = None,
) -> FleetImportOut:
    """Import a fleet spec (YAML body, or JSON ``{"spec": "<yaml>"}``) in one transaction."""
    caller.require_operator(write=True)
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in _YAML_TYPES:
        text, state = raw.decode("utf-8", errors="replace"), initial_state or "available"
    elif ctype in ("application/json", ""):
        try:
            body = FleetImportIn.model_validate(json.loads(raw or b"null"))
        except json.JSONDecodeError:
            raise InvalidRequest("the body must be JSON or YAML", code="invalid_json") from None
        except Exception as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or None
                raise ValidationFailed(f"{loc}: {first['msg']}", param=loc) from None
            raise
        text, state = body.spec, initial_state or body.initial_state
    else:
        raise InvalidRequest(
            f"unsupported content type {ctype!r}; send application/yaml or application/json",
            code="unsupported_media_type",
        )

    def work() -> service.ImportResult:
        spec = parse_spec(text, source="spec")
        return service.import_spec(
            db=ctx.db,
            clock=ctx.clock,
            spec=spec,
            initial_state=state,
            actor=_actor(caller),
            box=request.app.state.secret_box,
        )

    return FleetImportOut.of(await run_in_threadpool(work))
