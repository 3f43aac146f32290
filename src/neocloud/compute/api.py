"""Compute routes: instance types, instances (create, read, list, terminate, reboot, events),
clusters, reservations, capacity; and the image catalog (``images_api``, mounted here).

After a write the router nudges the background worker (``app.state.compute_nudge``, set by
whoever runs one) so that scheduling starts at once instead of at the next poll.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from neocloud.compute import access, clusters, occupancy, offerings, reservations, service
from neocloud.compute.config import ComputeConfig
from neocloud.compute.domain import INSTANCE_TYPES, CapacityClass, advise
from neocloud.compute.images_api import router as images_router
from neocloud.compute.prices import CATALOG_PRICES, GpuPrices, PriceSource
from neocloud.compute.reconciler import workload_hostname
from neocloud.compute.schemas import (
    CapacityOut,
    ClusterCreate,
    ClusterOut,
    ComputeEventOut,
    DeclinedOfferingOut,
    InstanceCreate,
    InstanceOut,
    InstanceTypeOut,
    OfferingOut,
    OfferingsOut,
    OfferingsQuery,
    ReservationCreate,
    ReservationExtend,
    ReservationOut,
    TenantLineOut,
    TenantMapOut,
)
from neocloud.compute.snapshot import (
    FreeGpus,
    capacity_by_region,
    free_gpu_counts,
    load_snapshot,
)
from neocloud.compute.tables import InstanceRow
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.kernel.clock import ensure_utc
from neocloud.kernel.errors import Conflict, ValidationFailed
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
router.include_router(images_router)
TAG_TYPES: list[str | Enum] = ["instance types"]
TAG_INSTANCES: list[str | Enum] = ["instances"]
InstanceId = Annotated[str, Path(max_length=40)]
Filter = Annotated[str | None, Query(max_length=40)]


def nudge(request: Request) -> None:
    poke = getattr(request.app.state, "compute_nudge", None)
    if poke is not None:
        poke()


def price_source(request: Request) -> PriceSource:
    """The app's price source (billing's book, wired at start-up); the catalog without one."""
    source: PriceSource | None = getattr(request.app.state, "compute_prices", None)
    return CATALOG_PRICES if source is None else source


def current_prices(request: Request, ctx: Ctx) -> GpuPrices:
    return price_source(request).prices_at(ctx.clock.now())


# Declared after the caller in each route, so an unauthenticated request reads no prices.
Prices = Annotated[GpuPrices, Depends(current_prices)]


def _out(row: InstanceRow, prices: GpuPrices) -> InstanceOut:
    price = prices.per_gpu_hour(row.gpu_model, CapacityClass(row.cls)) * row.gpu_count
    return InstanceOut.of(row, price)


@router.get("/instance-types", response_model=ListOut[InstanceTypeOut], tags=TAG_TYPES)
def list_instance_types(
    ctx: Ctx,
    caller: Caller,
    prices: Prices,
    gpu_model: Annotated[str | None, Query(max_length=64)] = None,
) -> ListOut[InstanceTypeOut]:
    """Presets of 1, 2, 4 and 8 GPUs per model, with hourly prices per class and coarse
    availability now (``high | medium | low | none``). A partial-node type counts only nodes
    that may be shared: bare-metal nodes (driver ``ssh``) take whole-node types only."""
    model = None
    if gpu_model is not None:
        model = resolve_gpu_model(gpu_model).id
    with ctx.db.transaction() as s:
        now = ctx.clock.now()
        free = free_gpu_counts(load_snapshot(s, now, gpu_model=model), now)
    data = []
    for t in INSTANCE_TYPES:
        if model is not None and t.gpu_model != model:
            continue
        f = free.get(t.gpu_model, FreeGpus())
        have = f.can_take(t.gpus)
        total = f.total if t.whole_node else f.partial_total
        advice = advise(have, total) if have >= t.gpus else advise(0, total)
        data.append(InstanceTypeOut.of(t, advice.value, prices))
    return ListOut(data=data, has_more=False)


@router.post("/instances", response_model=InstanceOut, status_code=201, tags=TAG_INSTANCES)
def create_instance(
    request: Request, ctx: Ctx, caller: Caller, body: InstanceCreate, prices: Prices
) -> InstanceOut:
    """Ask for an instance; it starts ``pending`` and moves to ``provisioning`` and ``running``
    (or ``failed`` with reason ``no_capacity``). With ``queue: true`` (or ``max_wait_s``) a
    request that does not fit waits ``pending`` for capacity, reserved > on-demand > spot and
    first come first served within a class (later smaller requests may start first only where
    they do not take what the oldest waiting one needs), and fails ``no_capacity`` when its wait
    (default 1 day, at most 7) runs out. Quota errors answer 403 ``quota_exceeded``."""
    spec = service.InstanceSpec(**body.model_dump())
    row = service.create_instance(db=ctx.db, clock=ctx.clock, actor=caller, spec=spec)
    nudge(request)
    return _out(row, prices)


@router.get("/instances", response_model=ListOut[InstanceOut], tags=TAG_INSTANCES)
def list_instances(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    prices: Prices,
    state: Filter = None,
    project_id: Filter = None,
    cls: Annotated[str | None, Query(alias="class", max_length=16)] = None,
    cluster_id: Filter = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> ListOut[InstanceOut]:
    filters = service.InstanceFilter(
        state=state, project_id=project_id, cls=cls, cluster_id=cluster_id, name=name
    )
    page = service.list_instances(
        db=ctx.db, actor=caller, filters=filters, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[_out(r, prices) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/instances/{instance_id}", response_model=InstanceOut, tags=TAG_INSTANCES)
def get_instance(instance_id: InstanceId, ctx: Ctx, caller: Caller, prices: Prices) -> InstanceOut:
    return _out(service.get_instance(db=ctx.db, actor=caller, instance_id=instance_id), prices)


@router.post("/instances/{instance_id}/terminate", response_model=InstanceOut, tags=TAG_INSTANCES)
def terminate_instance(
    request: Request, instance_id: InstanceId, ctx: Ctx, caller: Caller, prices: Prices
) -> InstanceOut:
    """End the instance (reason ``user``); repeating it is harmless."""
    row = service.terminate_instance(
        db=ctx.db, clock=ctx.clock, actor=caller, instance_id=instance_id
    )
    nudge(request)
    return _out(row, prices)


@router.post(
    "/instances/{instance_id}/reboot",
    response_model=InstanceOut,
    status_code=202,
    tags=TAG_INSTANCES,
)
def reboot_instance(
    request: Request, instance_id: InstanceId, ctx: Ctx, caller: Caller, prices: Prices
) -> InstanceOut:
    """Reboot a running instance through its node's driver (events ``reboot_requested``,
    ``reboot``, ``rebooted``); it stays yours and stays billed. Any other state is 409
    ``instance_not_running``; asking again while a reboot is under way changes nothing."""
    row = service.reboot_instance(db=ctx.db, clock=ctx.clock, actor=caller, instance_id=instance_id)
    nudge(request)
    return _out(row, prices)


@router.get(
    "/instances/{instance_id}/events", response_model=ListOut[ComputeEventOut], tags=TAG_INSTANCES
)
def list_instance_events(
    instance_id: InstanceId, ctx: Ctx, caller: Caller, paging: Paging
) -> ListOut[ComputeEventOut]:
    """Every step of the instance, oldest first."""
    page = service.list_events(
        db=ctx.db, actor=caller, subject_id=instance_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ComputeEventOut.of(e) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


# -------------------------------------------------------------------------------------- clusters

TAG_CLUSTERS: list[str | Enum] = ["clusters"]
ClusterId = Annotated[str, Path(max_length=40)]


def _cluster_out(view: clusters.ClusterView, prices: GpuPrices) -> ClusterOut:
    c = view.cluster
    per_gpu = prices.per_gpu_hour(c.gpu_model, CapacityClass(c.cls))
    return ClusterOut.of(view, per_gpu * (clusters.gpus_per_node(view) * c.node_count))


@router.post("/clusters", response_model=ClusterOut, status_code=201, tags=TAG_CLUSTERS)
def create_cluster(
    request: Request, ctx: Ctx, caller: Caller, body: ClusterCreate, prices: Prices
) -> ClusterOut:
    """A gang of ``node_count`` whole nodes inside one ``topology.required`` domain (a fabric by
    default), spread over as few ``topology.preferred`` domains as possible; all or nothing."""
    data = body.model_dump()
    spec = clusters.ClusterSpec(**{**data, "topology": body.topology.model_dump()})
    row = clusters.create_cluster(db=ctx.db, clock=ctx.clock, actor=caller, spec=spec)
    nudge(request)
    return _cluster_out(clusters.get_cluster(db=ctx.db, actor=caller, cluster_id=row.id), prices)


@router.get("/clusters", response_model=ListOut[ClusterOut], tags=TAG_CLUSTERS)
def list_clusters(ctx: Ctx, caller: Caller, paging: Paging, prices: Prices) -> ListOut[ClusterOut]:
    page = clusters.list_clusters(db=ctx.db, actor=caller, limit=paging.limit, after=paging.after)
    return ListOut(
        data=[_cluster_out(v, prices) for v in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/clusters/{cluster_id}", response_model=ClusterOut, tags=TAG_CLUSTERS)
def get_cluster(cluster_id: ClusterId, ctx: Ctx, caller: Caller, prices: Prices) -> ClusterOut:
    """The cluster and every node with its topology path (region … rack)."""
    return _cluster_out(
        clusters.get_cluster(db=ctx.db, actor=caller, cluster_id=cluster_id), prices
    )


@router.post("/clusters/{cluster_id}/terminate", response_model=ClusterOut, tags=TAG_CLUSTERS)
def terminate_cluster(
    request: Request, cluster_id: ClusterId, ctx: Ctx, caller: Caller, prices: Prices
) -> ClusterOut:
    view = clusters.terminate_cluster(
        db=ctx.db, clock=ctx.clock, actor=caller, cluster_id=cluster_id
    )
    nudge(request)
    return _cluster_out(view, prices)


@router.get(
    "/clusters/{cluster_id}/events", response_model=ListOut[ComputeEventOut], tags=TAG_CLUSTERS
)
def list_cluster_events(
    cluster_id: ClusterId, ctx: Ctx, caller: Caller, paging: Paging
) -> ListOut[ComputeEventOut]:
    clusters.get_cluster(db=ctx.db, actor=caller, cluster_id=cluster_id)
    page = service.list_events(
        db=ctx.db, actor=caller, subject_id=cluster_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ComputeEventOut.of(e) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


HOSTS_CONTENT = {
    "text/plain": {
        "schema": {"type": "string"},
        "example": "# cluster train: 2 hosts, generated by neocloud\n\nHost train-0\n"
        "    HostName 203.0.113.10\n    Port 22\n    User ubuntu\n",
    },
    "application/yaml": {"schema": {"type": "string"}},
}


@router.get(
    "/clusters/{cluster_id}/hosts",
    response_class=Response,
    responses={
        200: {"description": "The running members, in the format", "content": HOSTS_CONTENT}
    },
    tags=TAG_CLUSTERS,
)
def cluster_hosts(
    cluster_id: ClusterId,
    ctx: Ctx,
    caller: Caller,
    format: Annotated[
        str,
        Query(
            max_length=16,
            description="ssh-config | hostfile (text/plain); ansible | dstack | skypilot "
            "(application/yaml)",
        ),
    ] = "ssh-config",
) -> Response:
    """The cluster's running members in a tool's format: an OpenSSH client config
    (``ssh-config``), an MPI/DeepSpeed hostfile (``hostfile``: ``HOST slots=GPUS``), an Ansible
    YAML inventory (``ansible``), a dstack SSH fleet (``dstack``) or a SkyPilot SSH node pool
    (``skypilot``; private key paths are placeholders to fill in). Simulated addresses are
    marked so in a comment. 422 ``unknown_format`` for another format; 409
    ``cluster_not_running`` while no member runs."""
    fmt = access.check_format(format)
    view = clusters.get_cluster(db=ctx.db, actor=caller, cluster_id=cluster_id)
    members = [
        access.Member(workload_hostname(m), m.access, m.state, m.gpu_count) for m in view.members
    ]
    hosts = access.reachable_hosts(members)
    if not hosts:
        raise Conflict(
            f"cluster {cluster_id} is {view.cluster.state}: no member runs yet, so it has no "
            "hosts to list",
            code="cluster_not_running",
            details={"state": view.cluster.state},
        )
    text = access.render(fmt, hosts, name=view.cluster.name or view.cluster.id)
    return Response(text, media_type=access.MEDIA_TYPES[fmt])


# ---------------------------------------------------------------------------------- reservations

TAG_RESERVATIONS: list[str | Enum] = ["reservations"]
ReservationId = Annotated[str, Path(max_length=40)]


def _config(request: Request) -> ComputeConfig:
    config: ComputeConfig | None = getattr(request.app.state, "compute_config", None)
    if config is None:
        config = ComputeConfig.from_settings(request.app.state.ctx.settings)
        request.app.state.compute_config = config
    return config


@router.post("/reservations/offerings", response_model=OfferingsOut, tags=TAG_RESERVATIONS)
def find_offerings(
    request: Request, ctx: Ctx, caller: Caller, body: OfferingsQuery
) -> OfferingsOut:
    """Up to 6 priced capacity blocks (start, end, fabric, price), each valid for 5 minutes;
    ``declined``: blocks that fit but that the admission policy does not sell, and why."""
    query = offerings.OfferingQuery(
        body.gpu_model,
        body.node_count,
        body.duration_hours,
        ensure_utc(body.start_after) if body.start_after else None,
        ensure_utc(body.start_before) if body.start_before else None,
        body.fabric,
        body.org_id,
    )
    got = offerings.quote(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        query=query,
        config=_config(request),
        prices=price_source(request),
    )
    declined = [
        DeclinedOfferingOut(
            start=d.start_at,
            end=d.end_at,
            fabric=d.fabric,
            reason=d.reason,
            bid_price_per_gpu_hour=d.bid_price,
            price_per_gpu_hour=d.price,
        )
        for d in got.declined
    ]
    return OfferingsOut(
        data=[OfferingOut.of(r) for r in got.offerings], has_more=False, declined=declined
    )


@router.post("/reservations", response_model=ReservationOut, status_code=201, tags=TAG_RESERVATIONS)
def buy_reservation(
    request: Request, ctx: Ctx, caller: Caller, body: ReservationCreate
) -> ReservationOut:
    """Buy an offering (buying it again answers the same reservation); a stale or taken one is
    a 409 with ``details.suggestion``, a fresh offering."""
    row = offerings.buy(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        offering_id=body.offering_id,
        config=_config(request),
        prices=price_source(request),
    )
    nudge(request)
    return ReservationOut.of(row)


@router.get("/reservations", response_model=ListOut[ReservationOut], tags=TAG_RESERVATIONS)
def list_reservations(ctx: Ctx, caller: Caller, paging: Paging) -> ListOut[ReservationOut]:
    page = reservations.list_reservations(
        db=ctx.db, actor=caller, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ReservationOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/reservations/{reservation_id}", response_model=ReservationOut, tags=TAG_RESERVATIONS)
def get_reservation(reservation_id: ReservationId, ctx: Ctx, caller: Caller) -> ReservationOut:
    return ReservationOut.of(
        reservations.get_reservation(db=ctx.db, actor=caller, reservation_id=reservation_id)
    )


@router.post(
    "/reservations/{reservation_id}/cancel", response_model=ReservationOut, tags=TAG_RESERVATIONS
)
def cancel_reservation(
    request: Request, reservation_id: ReservationId, ctx: Ctx, caller: Caller
) -> ReservationOut:
    """Cancel before the start (org admins); an active reservation runs to its end. The
    operator's policy may close cancellation some hours before the start, or refuse it."""
    row = reservations.cancel(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        reservation_id=reservation_id,
        config=_config(request),
    )
    nudge(request)
    return ReservationOut.of(row)


@router.post(
    "/reservations/{reservation_id}/extend", response_model=ReservationOut, tags=TAG_RESERVATIONS
)
def extend_reservation(
    reservation_id: ReservationId, ctx: Ctx, caller: Caller, body: ReservationExtend
) -> ReservationOut:
    """Extend by ``hours`` if the same nodes are free that long (else 409)."""
    row = reservations.extend(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        reservation_id=reservation_id,
        hours=body.hours,
    )
    return ReservationOut.of(row)


@router.get(
    "/reservations/{reservation_id}/events",
    response_model=ListOut[ComputeEventOut],
    tags=TAG_RESERVATIONS,
)
def list_reservation_events(
    reservation_id: ReservationId, ctx: Ctx, caller: Caller, paging: Paging
) -> ListOut[ComputeEventOut]:
    reservations.get_reservation(db=ctx.db, actor=caller, reservation_id=reservation_id)
    page = service.list_events(
        db=ctx.db, actor=caller, subject_id=reservation_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ComputeEventOut.of(e) for e in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


# -------------------------------------------------------------------------------------- capacity


@router.get("/capacity", response_model=ListOut[CapacityOut], tags=["capacity"])
def capacity(
    ctx: Ctx, caller: Caller, gpu_model: Annotated[str | None, Query(max_length=64)] = None
) -> ListOut[CapacityOut]:
    """Availability now per region and GPU model: ``high | medium | low | none`` for tenants
    (``partial_node``: for instance types smaller than a node, which bare-metal nodes never
    take); operators also see free and total GPUs, whole free nodes and
    ``partial_capable_gpus`` (free GPUs on nodes that may be shared)."""
    model = resolve_gpu_model(gpu_model).id if gpu_model else None
    now = ctx.clock.now()
    with ctx.db.transaction() as s:
        lines = capacity_by_region(load_snapshot(s, now, gpu_model=model), now)
    data = [
        CapacityOut(
            region=line.region,
            gpu_model=line.gpu_model,
            on_demand=advise(line.free_gpus, line.total_gpus).value,
            spot=advise(line.free_gpus, line.total_gpus).value,
            free_gpus=line.free_gpus if caller.is_operator else None,
            total_gpus=line.total_gpus if caller.is_operator else None,
            free_nodes=line.free_nodes if caller.is_operator else None,
            partial_node=advise(line.partial_capable_gpus, line.partial_total_gpus).value,
            partial_capable_gpus=line.partial_capable_gpus if caller.is_operator else None,
        )
        for line in lines
    ]
    return ListOut(data=data, has_more=False)


@router.get("/capacity/tenants", response_model=TenantMapOut, tags=["capacity"])
def capacity_tenants(
    ctx: Ctx,
    caller: Caller,
    group_by: Annotated[str, Query(max_length=32, description="a topology level")],
    within_level: Annotated[
        str | None, Query(max_length=32, description="only inside one domain: its level")
    ] = None,
    within: Annotated[
        str | None, Query(max_length=63, description="that domain's name (with within_level)")
    ] = None,
) -> TenantMapOut:
    """GPUs held now per domain of ``group_by`` and org, from the open allocations: which
    tenants sit where (operators)."""
    caller.require_operator()
    if (within_level is None) != (within is None):
        raise ValidationFailed(
            "within and within_level go together",
            code="missing_field",
            param="within" if within is None else "within_level",
        )
    inside = (within_level, within) if within_level is not None and within is not None else None
    rows = occupancy.tenants_by_domain(db=ctx.db, clock=ctx.clock, level=group_by, within=inside)
    return TenantMapOut(
        group_by=group_by,
        data=[TenantLineOut(domain=r.domain, org_id=r.org_id, gpus=r.gpus) for r in rows],
    )
