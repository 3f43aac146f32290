"""Fleet rows: settings (levels), domains, nodes, their topology index, labels, events, checks."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Amount, Json, UtcDateTime


class FleetSettingsRow(Base):
    """The fleet's topology levels, stored once (a single row, id 1)."""

    __tablename__ = "fleet_settings"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    levels: Mapped[list[str]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DomainRow(Base):
    """A topology domain (a region, a fabric, a rack, …); names are unique within a level."""

    __tablename__ = "fleet_domains"

    level: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    parent_path: Mapped[str] = mapped_column(sa.String(512))  # "us-east-1/us-east-1a"
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class NodeRow(Base):
    __tablename__ = "nodes"
    __table_args__ = (
        sa.Index("ix_nodes_model_state_id", "gpu_model", "state", "id"),
        sa.Index("ix_nodes_state_id", "state", "id"),
        sa.Index("ix_nodes_health_id", "health", "id"),
        sa.Index("ix_nodes_agent_seen_at", "agent_seen_at"),
        sa.Index("ix_nodes_role_id", "role", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(253), unique=True)
    gpu_model: Mapped[str] = mapped_column(sa.String(32))
    gpu_count: Mapped[int] = mapped_column(sa.Integer)
    vcpus: Mapped[int] = mapped_column(sa.Integer)
    ram_gib: Mapped[int] = mapped_column(sa.Integer)
    nvme_gib: Mapped[int] = mapped_column(sa.Integer)
    topology: Mapped[dict[str, str]] = mapped_column(Json)  # ordered {level: name}
    # gpu (rented to tenants), storage or service (the platform's own: gpu_model "none",
    # gpu_count 0, never in placement); ``fleet.domain.NodeRole``.
    role: Mapped[str] = mapped_column(sa.String(16), default="gpu", server_default="gpu")
    state: Mapped[str] = mapped_column(sa.String(16))
    state_reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    hold: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    resume_state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    drain_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    health: Mapped[str] = mapped_column(sa.String(8))
    health_checks: Mapped[dict[str, Any]] = mapped_column(Json)  # name -> latest result
    labels: Mapped[dict[str, str]] = mapped_column(Json)
    bmc: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    # Which driver runs the node (sim, ssh, …), its settings that are not secret, and its
    # credentials sealed with the platform's secret box (never returned, never logged).
    driver: Mapped[str] = mapped_column(sa.String(16), default="sim", server_default="sim")
    driver_config: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    driver_secret: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    capex_amount: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)
    capex_currency: Mapped[str | None] = mapped_column(sa.String(3), nullable=True)
    book_life_years: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    in_service_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    import_id: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    # What the node agent reported: the GPUs it found (``fleet.agent_schemas.Inventory``), when,
    # its last heartbeat, its version, and whether it read recorded NVML (``simulated``).
    inventory: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    inventory_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    agent_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    agent_version: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    simulated: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class NodeDomainRow(Base):
    """The index behind topology filters: one row per (node, level)."""

    __tablename__ = "node_domains"
    __table_args__ = (sa.Index("ix_node_domains_level_name_node", "level", "name", "node_id"),)

    node_id: Mapped[str] = mapped_column(
        sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    level: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63))


class NodeLabelRow(Base):
    """The index behind label filters: one row per (node, label)."""

    __tablename__ = "node_labels"
    __table_args__ = (sa.Index("ix_node_labels_key_value_node", "key", "value", "node_id"),)

    node_id: Mapped[str] = mapped_column(
        sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(255))


class NodeEventRow(Base):
    """One lifecycle transition of one node (append-only)."""

    __tablename__ = "node_events"
    __table_args__ = (sa.Index("ix_node_events_node_id_id", "node_id", "id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(sa.ForeignKey("nodes.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    from_state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    actor: Mapped[str] = mapped_column(sa.String(64))


class HealthCheckRow(Base):
    """One reported check result (append-only history; the node keeps the latest per name)."""

    __tablename__ = "node_health_checks"
    __table_args__ = (sa.Index("ix_node_health_checks_node_id_id", "node_id", "id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(sa.ForeignKey("nodes.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    name: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(8))
    message: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)


class FleetImportRow(Base):
    """One spec import: who loaded how many nodes when."""

    __tablename__ = "fleet_imports"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(sa.String(64))
    nodes_created: Mapped[int] = mapped_column(sa.Integer)
    gpus_created: Mapped[int] = mapped_column(sa.Integer)
    initial_state: Mapped[str] = mapped_column(sa.String(16))


# --- the node agent ----------------------------------------------------------------------------


class AgentTokenRow(Base):
    """A node's one live agent token, stored as the sha256 of the secret (shown once)."""

    __tablename__ = "node_agent_tokens"

    node_id: Mapped[str] = mapped_column(
        sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(sa.String(64))


class GpuTelemetryLatestRow(Base):
    """The latest telemetry of one GPU of one node (overwritten by every heartbeat), and the
    running sums of the series bucket in progress: a heartbeat in a later bucket writes the
    finished one to ``gpu_telemetry_series`` (one row per bucket, never one per heartbeat)."""

    __tablename__ = "gpu_telemetry_latest"

    node_id: Mapped[str] = mapped_column(
        sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    gpu_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    uuid: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    utilization_pct: Mapped[float] = mapped_column(sa.Float)
    memory_used_mib: Mapped[int] = mapped_column(sa.Integer)
    temperature_c: Mapped[float] = mapped_column(sa.Float)
    power_w: Mapped[float] = mapped_column(sa.Float)
    sm_clock_mhz: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    ecc_correctable: Mapped[int] = mapped_column(sa.BigInteger)
    ecc_uncorrectable: Mapped[int] = mapped_column(sa.BigInteger)
    retired_pages: Mapped[int] = mapped_column(sa.Integer)
    remap_failed: Mapped[bool] = mapped_column(sa.Boolean)
    throttle: Mapped[list[str]] = mapped_column(Json)
    xid: Mapped[list[int]] = mapped_column(Json)
    bucket_at: Mapped[datetime] = mapped_column(UtcDateTime())
    bucket_samples: Mapped[int] = mapped_column(sa.Integer)
    bucket_utilization_sum: Mapped[float] = mapped_column(sa.Float)
    bucket_utilization_max: Mapped[float] = mapped_column(sa.Float)
    bucket_memory_used_sum: Mapped[float] = mapped_column(sa.Float)
    bucket_memory_used_max: Mapped[int] = mapped_column(sa.Integer)
    bucket_temperature_sum: Mapped[float] = mapped_column(sa.Float)
    bucket_temperature_max: Mapped[float] = mapped_column(sa.Float)
    bucket_power_sum: Mapped[float] = mapped_column(sa.Float)
    bucket_power_max: Mapped[float] = mapped_column(sa.Float)


class GpuTelemetrySeriesRow(Base):
    """One bucket (``NEOCLOUD_AGENT_SERIES_STEP_S``) of one GPU's telemetry: averages and
    maxima of the heartbeats that fell in it; pruned after ``NEOCLOUD_AGENT_RETENTION_H``."""

    __tablename__ = "gpu_telemetry_series"
    __table_args__ = (sa.Index("ix_gpu_telemetry_series_bucket_at", "bucket_at"),)

    node_id: Mapped[str] = mapped_column(
        sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    gpu_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    bucket_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    samples: Mapped[int] = mapped_column(sa.Integer)
    utilization_avg: Mapped[float] = mapped_column(sa.Float)
    utilization_max: Mapped[float] = mapped_column(sa.Float)
    memory_used_avg_mib: Mapped[float] = mapped_column(sa.Float)
    memory_used_max_mib: Mapped[int] = mapped_column(sa.Integer)
    temperature_avg_c: Mapped[float] = mapped_column(sa.Float)
    temperature_max_c: Mapped[float] = mapped_column(sa.Float)
    power_avg_w: Mapped[float] = mapped_column(sa.Float)
    power_max_w: Mapped[float] = mapped_column(sa.Float)
    ecc_uncorrectable: Mapped[int] = mapped_column(sa.BigInteger)


# --- boot seeds ---------------------------------------------------------------------------------


class BootSeedRow(Base):
    """A cloud-init seed image a node's BMC fetches once at boot (``fleet.seeds``): found by the
    sha256 of its unguessable token, its image sealed (it holds the tenant's user data)."""

    __tablename__ = "boot_seeds"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    node_id: Mapped[str] = mapped_column(sa.ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    workload_id: Mapped[str] = mapped_column(sa.String(64))
    sealed: Mapped[str] = mapped_column(sa.Text)
    size: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    fetches: Mapped[int] = mapped_column(sa.Integer, default=0)
