"""Compute rows: instances, clusters, allocations (and their per-GPU claims), events,
reservations, offerings and per-node work of the reconciler.

On PostgreSQL the migration adds an exclusion constraint on ``gpu_claims``: two firm
(non-preemptible) claims of the same GPU of one node never overlap in time.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Amount, Json, UtcDateTime

ID = sa.String(40)


class _Leased:
    """Columns of a row the reconciler claims: who holds it, until when, and when it is due."""

    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class InstanceRow(_Leased, Base):
    __tablename__ = "instances"
    __table_args__ = (
        sa.Index("ix_instances_org_id_id", "org_id", "id"),
        sa.Index("ix_instances_state_id", "state", "id"),
        sa.Index("ix_instances_cluster_id", "cluster_id"),
        sa.Index("ix_instances_studio_job_id", "studio_job_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    cluster_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    reservation_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    name: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    instance_type: Mapped[str] = mapped_column(sa.String(32))
    gpu_model: Mapped[str] = mapped_column(sa.String(32))
    gpu_count: Mapped[int] = mapped_column(sa.Integer)
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    ram_gib: Mapped[int] = mapped_column(sa.Integer)
    cls: Mapped[str] = mapped_column(sa.String(16))
    reservation_policy: Mapped[str] = mapped_column(sa.String(8))
    reservation_ids: Mapped[list[str]] = mapped_column(Json)
    ssh_keys: Mapped[list[str]] = mapped_column(Json)  # public key lines, resolved at create
    ssh_key_ids: Mapped[list[str] | None] = mapped_column(Json, nullable=True)
    image: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    user_data: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    login_user: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    # How the tenant reaches it (drivers.base.Access as a dict), set when it is provisioned.
    access: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    reboot_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    state_reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    state_message: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    node_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    gpu_indices: Mapped[list[int]] = mapped_column(Json)
    allocation_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    # The reconciler's step in progress (provision, deprovision), due at ``due_at``.
    step: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    # Desired end: set by terminate, preemption (after the notice) or a reservation's end.
    stop_reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    stop_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Queued: a create that does not fit waits (pending) until then, else fails at once.
    queue_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    running_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # A member of a cluster with managed Slurm: when Slurm let go of it (drained, Slurm
    # removed from it), so the reconciler may stop it (``compute/slurm_heal.py``).
    scheduler_released_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The studio job (fine-tune or batch) this instance runs, when the studio asked for it
    # (``compute/jobs.py``): the job is billed by its tokens, not by this instance's GPU time.
    studio_job_id: Mapped[str | None] = mapped_column(ID, nullable=True)


class ClusterRow(Base):
    __tablename__ = "clusters"
    __table_args__ = (
        sa.Index("ix_clusters_org_id_id", "org_id", "id"),
        sa.Index("ix_clusters_state_id", "state", "id"),
        sa.Index("ix_clusters_scheduler_state", "scheduler_state"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    reservation_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    name: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    gpu_model: Mapped[str] = mapped_column(sa.String(32))
    node_count: Mapped[int] = mapped_column(sa.Integer)
    cls: Mapped[str] = mapped_column(sa.String(16))
    topology: Mapped[dict[str, Any]] = mapped_column(Json)
    fabric: Mapped[str | None] = mapped_column(sa.String(63), nullable=True)
    reservation_policy: Mapped[str] = mapped_column(sa.String(8))
    user_data: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # every member's
    state: Mapped[str] = mapped_column(sa.String(16))
    state_reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    state_message: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    queue_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    running_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # A managed scheduler on the members (``compute/slurm.py``): its type ("slurm"), its state
    # (configuring, ready, failed, removing, removed) and why, the member that runs the
    # controller, whether it is simulated, a lease while a step runs, when it became ready.
    scheduler: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    scheduler_state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    scheduler_reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    scheduler_controller: Mapped[str | None] = mapped_column(ID, nullable=True)
    scheduler_simulated: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    scheduler_lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    scheduler_ready_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The cluster's munge key sealed with the platform's SecretBox (a replacement joins with
    # the same key; never returned, logged or audited), and Slurm's nodes as configured:
    # {instance id: {"name": NodeName, "drained": bool}} (``compute/slurm_heal.py``).
    scheduler_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    scheduler_nodes: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)


class AllocationRow(Base):
    """GPUs of one node bound to an instance (or a reservation) for ``[start_at, end_at)``.

    ``end_at`` None is open-ended; ending an allocation sets it (the row stays: a billing fact).
    ``studio_job_id``: the studio job whose instance holds it (counted in utilization and quota,
    never rated as GPU time: the job's tokens are its bill).
    """

    __tablename__ = "allocations"
    __table_args__ = (
        sa.Index("ix_allocations_node_id_end_at", "node_id", "end_at"),
        sa.Index("ix_allocations_end_at", "end_at"),
        sa.Index("ix_allocations_instance_id", "instance_id"),
        sa.Index("ix_allocations_org_id_start_at", "org_id", "start_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    instance_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    cluster_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    reservation_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    node_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("nodes.id"))
    gpu_model: Mapped[str] = mapped_column(sa.String(32))
    gpu_count: Mapped[int] = mapped_column(sa.Integer)
    gpu_indices: Mapped[list[int]] = mapped_column(Json)
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    ram_gib: Mapped[int] = mapped_column(sa.Integer)
    cls: Mapped[str] = mapped_column(sa.String(16))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    studio_job_id: Mapped[str | None] = mapped_column(ID, nullable=True)


class GpuClaimRow(Base):
    """One GPU of one allocation: the unit the PostgreSQL exclusion constraint guards."""

    __tablename__ = "gpu_claims"
    __table_args__ = (sa.Index("ix_gpu_claims_node_id_gpu_index", "node_id", "gpu_index"),)

    allocation_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("allocations.id", ondelete="CASCADE"), primary_key=True
    )
    gpu_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(ID)
    firm: Mapped[bool] = mapped_column(sa.Boolean)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ComputeEventRow(Base):
    """One step of an instance, cluster or reservation (append-only)."""

    __tablename__ = "compute_events"
    __table_args__ = (sa.Index("ix_compute_events_subject_id_id", "subject_id", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    subject_id: Mapped[str] = mapped_column(ID)
    org_id: Mapped[str] = mapped_column(ID)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    kind: Mapped[str] = mapped_column(sa.String(32))
    from_state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    to_state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    node_id: Mapped[str | None] = mapped_column(ID, nullable=True)


class ReservationRow(Base):
    __tablename__ = "reservations"
    __table_args__ = (
        sa.Index("ix_reservations_org_id_id", "org_id", "id"),
        sa.Index("ix_reservations_state_id", "state", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    offering_id: Mapped[str | None] = mapped_column(ID, nullable=True, unique=True)
    gpu_model: Mapped[str] = mapped_column(sa.String(32))
    node_count: Mapped[int] = mapped_column(sa.Integer)
    fabric: Mapped[str | None] = mapped_column(sa.String(63), nullable=True)
    node_ids: Mapped[list[str]] = mapped_column(Json)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    price_amount: Mapped[Decimal] = mapped_column(Amount())
    price_currency: Mapped[str] = mapped_column(sa.String(3))
    state: Mapped[str] = mapped_column(sa.String(16))
    state_reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class OfferingRow(Base):
    """A quoted capacity block, valid until ``expires_at``; bought at most once."""

    __tablename__ = "offerings"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, index=True)
    gpu_model: Mapped[str] = mapped_column(sa.String(32))
    node_count: Mapped[int] = mapped_column(sa.Integer)
    fabric: Mapped[str] = mapped_column(sa.String(63))
    node_ids: Mapped[list[str]] = mapped_column(Json)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    price_amount: Mapped[Decimal] = mapped_column(Amount())
    price_currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class NodeWorkRow(_Leased, Base):
    """The reconciler's pending step on a node (a wipe in progress, …)."""

    __tablename__ = "node_work"

    node_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ImageRow(Base):
    """An OS image of the operator's catalog, named by instances and clusters at create time.

    ``is_default`` is true on the one default image and NULL on every other: the unique
    constraint then allows one default at most (the service keeps exactly one once any image
    exists). A retired image (``retired_at``) takes no new instances; those running keep it.
    """

    __tablename__ = "images"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    os: Mapped[str] = mapped_column(sa.String(64))
    cuda_driver: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    cuda_toolkit: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    login_user: Mapped[str] = mapped_column(sa.String(32))
    cloud_init: Mapped[bool] = mapped_column(sa.Boolean)
    drivers: Mapped[list[str]] = mapped_column(Json)  # drivers that can install or run it
    is_default: Mapped[bool | None] = mapped_column(sa.Boolean, unique=True, nullable=True)
    description: Mapped[str] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
