"""Instance use cases: create (desired state, pending), read, list, terminate, reboot, events,
quotas.

Each function is one transaction. The scheduler and the reconciler move instances on; the API
only writes what the tenant wants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import boot, domain, images
from neocloud.compute.domain import (
    CapacityClass,
    InstanceState,
    Reason,
    ReservationPolicy,
    resolve_instance_type,
)
from neocloud.compute.lifecycle import move_instance, record_event, request_stop
from neocloud.compute.quota import check_gpu_quota
from neocloud.compute.tables import ComputeEventRow, InstanceRow, ReservationRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.catalog import CATALOG
from neocloud.fleet.domain import parse_enum
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.kernel.ids import is_id, new_id
from neocloud.tenancy import quotas as tenancy_quotas
from neocloud.tenancy.ssh_key_format import ParsedKey
from neocloud.tenancy.tables import ProjectRow, QuotaDefaultRow

MAX_SSH_KEYS = 20
MAX_SSH_KEY_IDS = 16


@dataclass(frozen=True)
class InstanceSpec:
    """What a tenant asks for (already shaped by the wire schema)."""

    instance_type: str
    cls: str = CapacityClass.ON_DEMAND.value
    project_id: str | None = None
    reservation_policy: str = ReservationPolicy.AUTO.value
    reservation_ids: list[str] = field(default_factory=list)
    ssh_keys: list[str] = field(default_factory=list)
    ssh_key_ids: list[str] = field(default_factory=list)
    image: str | None = None
    user_data: str | None = None
    name: str | None = None
    queue: bool | None = None
    max_wait_s: int | None = None


def check_boot_inputs(
    *, ssh_keys: list[str], ssh_key_ids: list[str], image: str | None
) -> list[ParsedKey]:
    """The checks of a create's keys and image that need no database (instances and clusters):
    the inline key lines parsed (422 ``ssh_keys``), the counts, the image name's shape."""
    if len(ssh_keys) > MAX_SSH_KEYS:
        raise ValidationFailed(f"at most {MAX_SSH_KEYS} ssh keys", param="ssh_keys")
    if len(ssh_key_ids) > MAX_SSH_KEY_IDS:
        raise ValidationFailed(f"at most {MAX_SSH_KEY_IDS} ssh key ids", param="ssh_key_ids")
    if image is not None:
        boot.check_image_name(image, param="image")
    return boot.parse_inline_keys(ssh_keys)


# --- instances ------------------------------------------------------------------------------


def _validate(spec: InstanceSpec) -> tuple[domain.InstanceType, CapacityClass, ReservationPolicy]:
    itype = resolve_instance_type(spec.instance_type)
    cls = parse_enum(CapacityClass, spec.cls, "class")
    if cls not in domain.TENANT_CLASSES:
        raise ValidationFailed(
            "class must be on_demand or spot; reserved capacity is used through "
            "reservation_policy and reservation_ids",
            code="invalid_class",
            param="class",
        )
    policy = parse_enum(ReservationPolicy, spec.reservation_policy, "reservation_policy")
    for rid in spec.reservation_ids:
        if not is_id(rid, "rsv"):
            raise ValidationFailed(f"{rid!r} is not a reservation id", param="reservation_ids")
    if policy is ReservationPolicy.FORBID and spec.reservation_ids:
        raise ValidationFailed(
            "reservation_ids cannot be given with reservation_policy forbid",
            param="reservation_ids",
        )
    return itype, cls, policy


def _check_reservations(s: Session, actor: Principal, ids: list[str], gpu_model: str) -> None:
    for rid in ids:
        rsv = s.get(ReservationRow, rid)
        if rsv is None or rsv.org_id != actor.org_id:
            raise NotFound(
                f"no reservation {rid}", code="reservation_not_found", param="reservation_ids"
            )
        if rsv.gpu_model != gpu_model:
            raise ValidationFailed(
                f"reservation {rid} holds {rsv.gpu_model} nodes, not {gpu_model}",
                code="reservation_mismatch",
                param="reservation_ids",
            )
        if rsv.state not in ("scheduled", "active"):
            raise ValidationFailed(
                f"reservation {rid} is {rsv.state}",
                code="reservation_not_usable",
                param="reservation_ids",
            )


def check_project(s: Session, actor: Principal, project_id: str | None) -> None:
    """The project must exist and belong to the caller's org (else 404: no leak of others)."""
    if project_id is None:
        return
    row = s.get(ProjectRow, project_id)
    if row is None or row.org_id != actor.org_id:
        raise NotFound(f"no project {project_id}", code="project_not_found", param="project_id")


def create_instance(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    spec: InstanceSpec,
    studio_job_id: str | None = None,
) -> InstanceRow:
    """Record a pending instance of the caller's org after validation and the quota check.

    Raises ``ValidationFailed`` (unknown type, bad class; an unknown or retired ``image``,
    a bad ``ssh_keys`` line, an ``ssh_key_ids`` id that is not the org's, ``user_data`` the
    image cannot run), ``NotFound`` (foreign project), ``QuotaExceeded`` (with usage and
    limit). Nothing is written when any of them is raised. An omitted image is the catalog's
    default; the instance keeps the image's login user. ``studio_job_id`` marks an instance the
    studio asked for to run a job (``compute/jobs.py``; never set through the API).
    """
    actor.require_org_role(actor.org_id, Role.MEMBER)
    itype, cls, policy = _validate(spec)
    inline = check_boot_inputs(
        ssh_keys=spec.ssh_keys, ssh_key_ids=spec.ssh_key_ids, image=spec.image
    )
    now = clock.now()
    queue_until = domain.queue_deadline(spec.queue, spec.max_wait_s, now)
    # Inside a reservation (named, or any under strict) the instance is reserved capacity,
    # which sits outside quota; with ``auto`` it may still land in one at scheduling time.
    reserved = bool(spec.reservation_ids) or policy is ReservationPolicy.STRICT
    if reserved and cls is CapacityClass.SPOT:
        raise ValidationFailed(
            "spot instances do not run inside reservations", param="reservation_policy"
        )
    # Read before our own transaction: on SQLite a second one would wait on our write lock.
    limit = tenancy_quotas.effective_quota(db=db, org_id=actor.org_id, gpu_model=itype.gpu_model)
    with db.transaction() as s:
        check_project(s, actor, spec.project_id)
        booted = images.resolve_boot(
            s,
            org_id=actor.org_id,
            request=images.BootRequest(
                spec.image, spec.ssh_key_ids, inline, spec.user_data, itype.gpu_model
            ),
        )
        if reserved:
            _check_reservations(s, actor, spec.reservation_ids, itype.gpu_model)
            cls = CapacityClass.RESERVED
        else:
            check_gpu_quota(
                s, limit, org_id=actor.org_id, gpu_model=itype.gpu_model, requested=itype.gpus
            )
        row = InstanceRow(
            id=new_id("inst", at=now),
            org_id=actor.org_id,
            project_id=spec.project_id,
            name=spec.name,
            instance_type=itype.name,
            gpu_model=itype.gpu_model,
            gpu_count=itype.gpus,
            vcpus=itype.vcpus,
            ram_gib=itype.ram_gib,
            cls=cls.value,
            reservation_policy=policy.value,
            reservation_ids=list(spec.reservation_ids),
            ssh_keys=booted.ssh_keys,
            ssh_key_ids=booted.ssh_key_ids,
            image=booted.image,
            login_user=booted.login_user,
            user_data=booted.user_data,
            state=InstanceState.PENDING.value,
            queue_until=queue_until,
            gpu_indices=[],
            created_by=actor.key_id,
            created_at=now,
            updated_at=now,
            studio_job_id=studio_job_id,
        )
        s.add(row)
        record_event(
            s,
            subject_id=row.id,
            org_id=row.org_id,
            now=now,
            kind="state",
            to_state=row.state,
            message=f"requested {itype.name} ({cls.value})"
            + (f", waits for capacity until {queue_until.isoformat()}" if queue_until else ""),
        )
    return row


def _visible(s: Session, actor: Principal, instance_id: str, *, lock: bool = False) -> InstanceRow:
    stmt = sa.select(InstanceRow).where(InstanceRow.id == instance_id)
    if lock:
        stmt = stmt.with_for_update()
    row = s.scalars(stmt).first()
    if row is None or not (actor.is_operator or row.org_id == actor.org_id):
        raise NotFound(f"no instance {instance_id}", code="instance_not_found", param="instance_id")
    return row


def get_instance(*, db: Database, actor: Principal, instance_id: str) -> InstanceRow:
    with db.transaction() as s:
        return _visible(s, actor, instance_id)


@dataclass(frozen=True)
class InstanceFilter:
    state: str | None = None
    project_id: str | None = None
    cls: str | None = None
    cluster_id: str | None = None
    name: str | None = None


def list_instances(
    *,
    db: Database,
    actor: Principal,
    filters: InstanceFilter | None = None,
    limit: int,
    after: str | None,
) -> Page[InstanceRow]:
    """The caller's org's instances (operators: every org's), ordered by id."""
    f = filters or InstanceFilter()
    stmt = sa.select(InstanceRow)
    if not actor.is_operator:
        stmt = stmt.where(InstanceRow.org_id == actor.org_id)
    if f.state:
        stmt = stmt.where(InstanceRow.state == parse_enum(InstanceState, f.state, "state").value)
    if f.cls:
        stmt = stmt.where(InstanceRow.cls == parse_enum(CapacityClass, f.cls, "class").value)
    if f.project_id:
        stmt = stmt.where(InstanceRow.project_id == f.project_id)
    if f.cluster_id:
        stmt = stmt.where(InstanceRow.cluster_id == f.cluster_id)
    if f.name:
        stmt = stmt.where(InstanceRow.name == f.name)
    with db.transaction() as s:
        return paginate(s, stmt, InstanceRow.id, limit=limit, after=after)


def terminate_instance(
    *, db: Database, clock: Clock, actor: Principal, instance_id: str
) -> InstanceRow:
    """Ask for the instance to end (reason ``user``). A pending one ends at once; a placed one
    is stopped by the reconciler. Terminating an ended instance changes nothing."""
    now = clock.now()
    with db.transaction() as s:
        row = _visible(s, actor, instance_id, lock=True)
        actor.require_org_role(row.org_id, Role.MEMBER)
        state = InstanceState(row.state)
        if state in domain.INSTANCE_FINAL:
            return row
        # A stop already due now wins; one planned later (a reservation's end, a spot
        # instance's end before a booked reservation) is brought forward.
        if row.stop_reason is not None and row.stop_at is not None and row.stop_at <= now:
            return row
        if row.cluster_id is not None:
            raise ValidationFailed(
                "this instance is a node of a cluster; terminate the cluster",
                code="cluster_member",
                param="instance_id",
            )
        if state is InstanceState.PENDING:
            move_instance(s, row, InstanceState.TERMINATED, now, reason=Reason.USER.value)
        else:
            request_stop(s, row, now, reason=Reason.USER, at=now)
    return row


def reboot_instance(
    *, db: Database, clock: Clock, actor: Principal, instance_id: str
) -> InstanceRow:
    """Ask for a reboot of a running instance (the reconciler reboots it through the node's
    driver). It stays the tenant's and stays billed: its allocation does not change. 409
    ``instance_not_running`` in any other state; asking again while one is under way changes
    nothing."""
    now = clock.now()
    with db.transaction() as s:
        row = _visible(s, actor, instance_id, lock=True)
        actor.require_org_role(row.org_id, Role.MEMBER)
        if row.state != InstanceState.RUNNING.value or (
            row.stop_at is not None and row.stop_at <= now
        ):
            state = "stopping" if row.state == InstanceState.RUNNING.value else row.state
            raise Conflict(
                f"only a running instance can be rebooted; {instance_id} is {state}",
                code="instance_not_running",
                param="instance_id",
                details={"state": state},
            )
        if row.reboot_requested_at is not None or row.step == "reboot":
            return row
        row.reboot_requested_at = now
        row.updated_at = now
        record_event(
            s,
            subject_id=row.id,
            org_id=row.org_id,
            now=now,
            kind="reboot_requested",
            message="reboot requested",
            node_id=row.node_id,
        )
    return row


def list_events(
    *, db: Database, actor: Principal, subject_id: str, limit: int, after: str | None
) -> Page[ComputeEventRow]:
    """Events of an instance (or cluster, reservation) the caller may see, oldest first."""
    with db.transaction() as s:
        if subject_id.startswith("inst_"):
            _visible(s, actor, subject_id)
        org = s.scalar(
            sa.select(ComputeEventRow.org_id).where(ComputeEventRow.subject_id == subject_id)
        )
        if org is None or not (actor.is_operator or org == actor.org_id):
            raise NotFound(f"no object {subject_id}", code="not_found", param="id")
        stmt = sa.select(ComputeEventRow).where(ComputeEventRow.subject_id == subject_id)
        return paginate(s, stmt, ComputeEventRow.id, limit=limit, after=after)


# --- platform bootstrap -----------------------------------------------------------------------

DEMO_DEFAULT_QUOTA_GPUS = 64


def register_default_quotas(
    *, db: Database, clock: Clock, limit_gpus: int = DEMO_DEFAULT_QUOTA_GPUS
) -> list[str]:
    """Register a default GPU quota for every catalog model that has none (``neocloud up``).

    Tenancy treats "no quota registered" as zero GPUs, which would refuse every first create
    on a fresh platform; an operator can lower or raise these defaults later. Returns the
    models registered now.
    """
    now = clock.now()
    made = []
    with db.transaction() as s:
        have = set(s.scalars(sa.select(QuotaDefaultRow.gpu_model)))
        for model in CATALOG:
            if model.id not in have:
                s.add(QuotaDefaultRow(gpu_model=model.id, limit_gpus=limit_gpus, updated_at=now))
                made.append(model.id)
    return made
