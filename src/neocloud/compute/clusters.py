"""Cluster use cases: a gang of N whole nodes of one GPU model, all or nothing.

A cluster is created ``pending`` with one pending member instance per node (so its GPUs count
against quota at once); the scheduler places the gang in one decision and one transaction.
The cluster's state follows its members: all running → ``running``; a member lost to a node
failure → ``degraded`` until the scheduler books a replacement from the lowest common domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import domain, images
from neocloud.compute.domain import (
    CapacityClass,
    ClusterState,
    InstanceState,
    Reason,
    ReservationPolicy,
    resolve_instance_type,
)
from neocloud.compute.lifecycle import move_cluster, record_event, stop_members
from neocloud.compute.quota import check_gpu_quota
from neocloud.compute.service import check_boot_inputs, check_project
from neocloud.compute.snapshot import levels_of
from neocloud.compute.tables import ClusterRow, InstanceRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.catalog import GpuModel, resolve_gpu_model
from neocloud.fleet.domain import NodeState, parse_enum
from neocloud.fleet.tables import NodeDomainRow, NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.tenancy import quotas as tenancy_quotas

MAX_NODES = 4096
SCHEDULER_TYPES: tuple[str, ...] = ("slurm",)
# The longest a member asked to stop waits for Slurm to let go of it (drained, removed); past
# it the reconciler stops it anyway (the Slurm worker is down: a member's release must not
# wait on it forever). Longer than a Slurm step's lease (compute/slurm_members.py).
MEMBER_HOLD_MAX_S = 1800


class SchedulerState(StrEnum):
    """A managed scheduler's state (``compute/slurm.py`` drives it): ``configuring`` until
    every member runs and Slurm answers, then ``ready`` or ``failed`` (with the reason);
    ``removing`` after a terminate, while it is taken off the members, then ``removed``."""

    CONFIGURING = "configuring"
    READY = "ready"
    FAILED = "failed"
    REMOVING = "removing"
    REMOVED = "removed"


@dataclass(frozen=True)
class ClusterSpec:
    gpu_model: str
    node_count: int
    cls: str = CapacityClass.ON_DEMAND.value
    topology: dict[str, object] = field(default_factory=dict)
    fabric: str | None = None
    project_id: str | None = None
    reservation_policy: str = ReservationPolicy.AUTO.value
    ssh_keys: list[str] = field(default_factory=list)
    ssh_key_ids: list[str] = field(default_factory=list)
    image: str | None = None
    user_data: str | None = None
    name: str | None = None
    queue: bool | None = None
    max_wait_s: int | None = None
    scheduler: dict[str, object] | None = None


def check_scheduler(scheduler: dict[str, object] | None) -> str | None:
    """The scheduler type a cluster asks for (``None``: none); 422 naming ``scheduler.type``
    for a type the platform does not manage."""
    if scheduler is None:
        return None
    kind = scheduler.get("type")
    if kind not in SCHEDULER_TYPES:
        shown = str(kind)[:40] if kind is not None else "none"
        raise ValidationFailed(
            f"unknown scheduler type {shown!r}: the platform manages {', '.join(SCHEDULER_TYPES)}",
            code="unknown_scheduler",
            param="scheduler.type",
        )
    return str(kind)


def _topology(spec: ClusterSpec, levels: tuple[str, ...]) -> dict[str, object]:
    topo = dict(spec.topology or {})
    unknown = set(topo) - {"required", "preferred", "segment", "segment_level"}
    if unknown:
        raise ValidationFailed(
            f"unknown topology keys: {', '.join(sorted(unknown))}", param="topology"
        )
    required = str(topo.get("required") or "fabric")
    preferred = topo.get("preferred", "block")
    for key, value in (("required", required), ("preferred", preferred)):
        if value is not None and value not in levels:
            raise ValidationFailed(
                f"topology.{key} must be a level of the fleet: {', '.join(levels)}",
                param=f"topology.{key}",
            )
    segment = topo.get("segment")
    if segment is not None:
        if not isinstance(segment, int) or isinstance(segment, bool) or segment < 1:
            raise ValidationFailed(
                "topology.segment is a positive number of nodes", param="topology.segment"
            )
        if spec.node_count % segment:
            raise ValidationFailed(
                f"topology.segment {segment} does not divide node_count {spec.node_count}",
                param="topology.segment",
            )
    return {
        "required": required,
        "preferred": preferred,
        "segment": segment,
        "segment_level": str(topo.get("segment_level") or "block"),
    }


def create_cluster(
    *, db: Database, clock: Clock, actor: Principal, spec: ClusterSpec
) -> ClusterRow:
    """Record a pending cluster and its pending member instances (quota checked for all).

    Image, SSH keys and user data are checked as for an instance (422 naming ``image``,
    ``ssh_keys``, ``ssh_key_ids`` or ``user_data``) and every member gets them."""
    actor.require_org_role(actor.org_id, Role.MEMBER)
    model = resolve_gpu_model(spec.gpu_model)
    inline = check_boot_inputs(
        ssh_keys=spec.ssh_keys, ssh_key_ids=spec.ssh_key_ids, image=spec.image
    )
    if not 1 <= spec.node_count <= MAX_NODES:
        raise ValidationFailed(f"node_count must be between 1 and {MAX_NODES}", param="node_count")
    cls = parse_enum(CapacityClass, spec.cls, "class")
    if cls not in domain.TENANT_CLASSES:
        raise ValidationFailed("class must be on_demand or spot", param="class")
    policy = parse_enum(ReservationPolicy, spec.reservation_policy, "reservation_policy")
    scheduler = check_scheduler(spec.scheduler)
    now = clock.now()
    queue_until = domain.queue_deadline(spec.queue, spec.max_wait_s, now)
    limit = tenancy_quotas.effective_quota(db=db, org_id=actor.org_id, gpu_model=model.id)
    with db.transaction() as s:
        topo = _topology(spec, levels_of(s))
        if spec.fabric is not None and not s.scalar(
            sa.select(NodeDomainRow.node_id)
            .where(NodeDomainRow.level == "fabric", NodeDomainRow.name == spec.fabric)
            .limit(1)
        ):
            raise ValidationFailed(f"unknown fabric {spec.fabric!r}", param="fabric")
        check_project(s, actor, spec.project_id)
        booted = images.resolve_boot(
            s,
            org_id=actor.org_id,
            request=images.BootRequest(
                spec.image, spec.ssh_key_ids, inline, spec.user_data, model.id
            ),
        )
        itype = node_type(s, model)
        check_gpu_quota(
            s,
            limit,
            org_id=actor.org_id,
            gpu_model=model.id,
            requested=itype.gpus * spec.node_count,
        )
        cluster = ClusterRow(
            id=new_id("clu", at=now),
            org_id=actor.org_id,
            project_id=spec.project_id,
            name=spec.name,
            gpu_model=model.id,
            node_count=spec.node_count,
            cls=cls.value,
            topology=topo,
            fabric=spec.fabric,
            reservation_policy=policy.value,
            user_data=booted.user_data,
            state=ClusterState.PENDING.value,
            queue_until=queue_until,
            created_by=actor.key_id,
            created_at=now,
            updated_at=now,
            scheduler=scheduler,
            scheduler_state=None if scheduler is None else SchedulerState.CONFIGURING.value,
            scheduler_reason=None if scheduler is None else "waiting for every member to run",
        )
        s.add(cluster)
        for i in range(spec.node_count):
            s.add(
                InstanceRow(
                    id=new_id("inst", at=now),
                    org_id=actor.org_id,
                    project_id=spec.project_id,
                    cluster_id=cluster.id,
                    name=f"{spec.name or cluster.id}-{i}",
                    instance_type=itype.name,
                    gpu_model=model.id,
                    gpu_count=itype.gpus,
                    vcpus=itype.vcpus,
                    ram_gib=itype.ram_gib,
                    cls=cls.value,
                    reservation_policy=policy.value,
                    reservation_ids=[],
                    ssh_keys=list(booted.ssh_keys),
                    ssh_key_ids=list(booted.ssh_key_ids),
                    image=booted.image,
                    login_user=booted.login_user,
                    user_data=booted.user_data,
                    state=InstanceState.PENDING.value,
                    gpu_indices=[],
                    created_by=actor.key_id,
                    created_at=now,
                    updated_at=now,
                )
            )
        record_event(
            s,
            subject_id=cluster.id,
            org_id=cluster.org_id,
            now=now,
            kind="state",
            to_state=cluster.state,
            message=f"requested {spec.node_count} x {itype.name} ({cls.value})"
            + (f", waits for capacity until {queue_until.isoformat()}" if queue_until else ""),
        )
    return cluster


def node_type(s: Session, model: GpuModel) -> domain.InstanceType:
    """The instance type of one member: a whole node of the shape the fleet has for ``model``
    (its most common GPU count among nodes in service; the catalog's maximum when the fleet
    has none, so such a cluster fails for capacity, not for its shape)."""
    shapes = s.execute(
        sa.select(NodeRow.gpu_count, sa.func.count())
        .where(NodeRow.gpu_model == model.id, NodeRow.state != NodeState.RETIRED.value)
        .group_by(NodeRow.gpu_count)
    ).all()
    gpus = max(shapes, key=lambda g: (g[1], g[0]))[0] if shapes else model.max_gpus_per_node
    short = model.aliases[0] if model.aliases else model.id
    try:
        return resolve_instance_type(f"{gpus}x{short}")
    except ValidationFailed:
        raise ValidationFailed(
            f"the fleet's {model.id} nodes have {gpus} GPUs, which no instance type offers; "
            "clusters are made of whole nodes",
            code="unsupported_node_shape",
            param="gpu_model",
        ) from None


def gpus_per_node(view: ClusterView) -> int:
    """GPUs of each node of a cluster (its members are whole nodes of one shape)."""
    if view.members:
        return view.members[0].gpu_count
    return resolve_gpu_model(view.cluster.gpu_model).max_gpus_per_node


def _visible(s: Session, actor: Principal, cluster_id: str, *, lock: bool = False) -> ClusterRow:
    row = s.get(ClusterRow, cluster_id, with_for_update=lock)
    if row is None or not (actor.is_operator or row.org_id == actor.org_id):
        raise NotFound(f"no cluster {cluster_id}", code="cluster_not_found", param="cluster_id")
    return row


@dataclass(frozen=True)
class ClusterView:
    cluster: ClusterRow
    members: list[InstanceRow]
    paths: dict[str, dict[str, str]]  # node id -> {level: name}


def get_cluster(*, db: Database, actor: Principal, cluster_id: str) -> ClusterView:
    with db.transaction() as s:
        row = _visible(s, actor, cluster_id)
        return _view(s, row)


def _view(s: Session, row: ClusterRow) -> ClusterView:
    members = list(
        s.scalars(
            sa.select(InstanceRow).where(InstanceRow.cluster_id == row.id).order_by(InstanceRow.id)
        )
    )
    node_ids = {m.node_id for m in members if m.node_id}
    paths = {
        n.id: dict(n.topology)
        for n in s.scalars(sa.select(NodeRow).where(NodeRow.id.in_(node_ids)))
    }
    return ClusterView(row, members, paths)


def list_clusters(
    *, db: Database, actor: Principal, limit: int, after: str | None
) -> Page[ClusterView]:
    stmt = sa.select(ClusterRow)
    if not actor.is_operator:
        stmt = stmt.where(ClusterRow.org_id == actor.org_id)
    with db.transaction() as s:
        page = paginate(s, stmt, ClusterRow.id, limit=limit, after=after)
        views = [_view(s, r) for r in page.items]
    return Page(views, page.has_more, page.next_cursor)


def terminate_cluster(
    *, db: Database, clock: Clock, actor: Principal, cluster_id: str
) -> ClusterView:
    """Stop every member (reason ``user``); the cluster ends when they all have. With Slurm
    on the members, the cluster is ``stopping`` while Slurm is removed, and the members stop
    after that (``compute/slurm.py``)."""
    now = clock.now()
    with db.transaction() as s:
        # Locked: the scheduler places a pending cluster's members (and books a degraded one's
        # replacement) under this lock, so the members read below are the ones that exist.
        row = _visible(s, actor, cluster_id, lock=True)
        actor.require_org_role(row.org_id, Role.MEMBER)
        if ClusterState(row.state) in domain.CLUSTER_FINAL | {ClusterState.STOPPING}:
            return _view(s, row)
        if _slurm_on_members(row):
            # Slurm comes off the members first (compute/slurm.py), then they stop.
            row.scheduler_state = SchedulerState.REMOVING.value
            row.scheduler_reason = "terminating: removing Slurm from every member"
            move_cluster(s, row, ClusterState.STOPPING, now, reason=Reason.USER.value)
            return _view(s, row)
        if row.scheduler_state == SchedulerState.CONFIGURING.value:
            row.scheduler_state = SchedulerState.REMOVED.value
            row.scheduler_reason = "terminated before Slurm was configured"
        stop_members(s, row, now, reason=Reason.USER, at=now)
        if row.state == ClusterState.PENDING.value:
            move_cluster(s, row, ClusterState.TERMINATED, now, reason=Reason.USER.value)
        else:
            move_cluster(s, row, ClusterState.STOPPING, now, reason=Reason.USER.value)
        return _view(s, row)


def _slurm_on_members(row: ClusterRow) -> bool:
    """Whether Slurm is (or is being) configured on the cluster's members."""
    state = row.scheduler_state
    return state == SchedulerState.READY.value or (
        state == SchedulerState.CONFIGURING.value and row.scheduler_lease_until is not None
    )


def clusters_holding_members() -> sa.Select[str]:
    """Clusters whose members must not be stopped yet: Slurm is on them (or being put on or
    taken off them), and comes off every member first (``compute/slurm.py``); otherwise a
    node could go back to the pool with another tenant's daemons and munge key on it."""
    return sa.select(ClusterRow.id).where(
        sa.or_(
            ClusterRow.scheduler_state.in_(
                [SchedulerState.READY.value, SchedulerState.REMOVING.value]
            ),
            sa.and_(
                ClusterRow.scheduler_state == SchedulerState.CONFIGURING.value,
                ClusterRow.scheduler_lease_until.is_not(None),
            ),
        )
    )
