"""Instances that run studio jobs (fine-tunes, batches): the seam the studio's fleet runner uses.

A job asks for capacity in its org's name like any tenant: a pending instance of a preset type
and class, through ``create_instance`` (validation, the org's GPU quota, the queue), marked with
the job's id (``studio_job_id`` on the instance and, once placed, on its allocation). It is then
a workload like any other: the scheduler places it, spot ones are preempted, it counts in fleet
utilization and against the org's quota. Billing rates the job's tokens, never the allocation's
GPU time (``billing.service.load_intervals`` leaves marked allocations out).

One live instance per job: ``request_job_instance`` answers the job's live instance when there
is one and creates one only when there is none (callers hold the job's lease, so two workers
never ask for the same job at once). ``end_job_instances`` terminates what is left of a job.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from neocloud.compute.domain import INSTANCE_LIVE, InstanceState, Reason, ReservationPolicy
from neocloud.compute.reconciler import node_ref
from neocloud.compute.service import InstanceSpec, create_instance, terminate_instance
from neocloud.compute.tables import InstanceRow
from neocloud.db.engine import Database
from neocloud.drivers.base import DEFAULT_LOGIN_USER, NodeRef
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock

_LIVE = [s.value for s in INSTANCE_LIVE]


@dataclass(frozen=True, slots=True)
class JobInstance:
    """What the studio needs to know of a job's instance."""

    id: str
    org_id: str
    state: str
    instance_type: str
    cls: str
    stop_reason: str | None  # set once a stop is asked for (a preemption notice, a terminate)
    state_reason: str | None
    state_message: str | None  # a queued one: "queued until …: why it does not fit"

    @property
    def live(self) -> bool:
        return InstanceState(self.state) in INSTANCE_LIVE

    @property
    def usable(self) -> bool:
        """Running, with no stop asked for: the job may run on it."""
        return self.state == InstanceState.RUNNING.value and self.stop_reason is None

    @property
    def preempted(self) -> bool:
        return Reason.PREEMPTED.value in (self.stop_reason, self.state_reason)


def _view(row: InstanceRow) -> JobInstance:
    return JobInstance(
        row.id,
        row.org_id,
        row.state,
        row.instance_type,
        row.cls,
        row.stop_reason,
        row.state_reason,
        row.state_message,
    )


def _acting_for(org_id: str, key_id: str) -> Principal:
    """The job's org, as the key that created the job (a member's: what the job may do)."""
    return Principal(
        key_id=key_id, user_id="studio", org_id=org_id, role=Role.MEMBER, is_operator=False
    )


def job_instance(*, db: Database, studio_job_id: str) -> JobInstance | None:
    """The job's live instance, else its latest ended one; None when it never had one."""
    every = job_instances(db=db, studio_job_id=studio_job_id)
    live = [i for i in every if i.live]
    return live[-1] if live else (every[-1] if every else None)


def job_node(*, db: Database, studio_job_id: str) -> tuple[NodeRef, str] | None:
    """The node under the job's running instance, as drivers need it, and the instance's
    login user (the job's processes run as that user); None when it has none."""
    with db.transaction() as s:
        found = s.execute(
            sa.select(NodeRow, InstanceRow.login_user)
            .join(InstanceRow, InstanceRow.node_id == NodeRow.id)
            .where(
                InstanceRow.studio_job_id == studio_job_id,
                InstanceRow.state == InstanceState.RUNNING.value,
            )
            .order_by(InstanceRow.created_at.desc())
            .limit(1)
        ).first()
        if found is None:
            return None
        node, login = found
        return node_ref(node), login or DEFAULT_LOGIN_USER


def job_instances(*, db: Database, studio_job_id: str) -> list[JobInstance]:
    """Every instance the job ever had, oldest first."""
    with db.transaction() as s:
        rows = s.scalars(
            sa.select(InstanceRow)
            .where(InstanceRow.studio_job_id == studio_job_id)
            .order_by(InstanceRow.created_at, InstanceRow.id)
        )
        return [_view(r) for r in rows]


def request_job_instance(
    *,
    db: Database,
    clock: Clock,
    org_id: str,
    key_id: str,
    studio_job_id: str,
    instance_type: str,
    cls: str,
    max_wait_s: int,
) -> JobInstance:
    """The job's live instance, or a new pending one in ``org_id``'s name (queued for up to
    ``max_wait_s``, never inside a reservation). Raises what ``create_instance`` raises:
    ``QuotaExceeded`` when the org's quota has no room, ``ValidationFailed`` for a bad type."""
    found = job_instance(db=db, studio_job_id=studio_job_id)
    if found is not None and found.live:
        return found
    spec = InstanceSpec(
        instance_type,
        cls=cls,
        reservation_policy=ReservationPolicy.FORBID.value,
        name=f"studio-{studio_job_id}"[:128],
        queue=True,
        max_wait_s=max_wait_s,
    )
    row = create_instance(
        db=db,
        clock=clock,
        actor=_acting_for(org_id, key_id),
        spec=spec,
        studio_job_id=studio_job_id,
    )
    return _view(row)


def end_job_instances(*, db: Database, clock: Clock, studio_job_id: str) -> list[str]:
    """Terminate the job's live instances (a pending one ends now, a placed one is stopped by
    the reconciler); answers their ids."""
    with db.transaction() as s:
        live = s.execute(
            sa.select(InstanceRow.id, InstanceRow.org_id, InstanceRow.created_by).where(
                InstanceRow.studio_job_id == studio_job_id, InstanceRow.state.in_(_LIVE)
            )
        ).all()
    for instance_id, org_id, key_id in live:
        terminate_instance(
            db=db, clock=clock, actor=_acting_for(org_id, key_id), instance_id=instance_id
        )
    return [instance_id for instance_id, _, _ in live]


def live_job_instances(*, db: Database) -> dict[str, str]:
    """Every live instance that runs a studio job: instance id → job id."""
    with db.transaction() as s:
        rows = s.execute(
            sa.select(InstanceRow.id, InstanceRow.studio_job_id).where(
                InstanceRow.studio_job_id.is_not(None), InstanceRow.state.in_(_LIVE)
            )
        ).all()
    return {instance_id: str(job_id) for instance_id, job_id in rows}
