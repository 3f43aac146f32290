"""fleet: the node agent (tokens, inventory, last heartbeat) and GPU telemetry (latest + series)

Revision ID: 0015_agent
Revises: 0014_images
Create Date: 2026-12-15 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0015_agent"
down_revision: str | tuple[str, ...] | None = "0014_images"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("inventory", Json, nullable=True))
        batch.add_column(sa.Column("inventory_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("agent_seen_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("agent_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("simulated", sa.Boolean(), nullable=True))
        batch.create_index("ix_nodes_agent_seen_at", ["agent_seen_at"], unique=False)
    op.create_table(
        "node_agent_tokens",
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_agent_tokens_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_agent_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_node_agent_tokens_token_hash")),
    )
    op.create_table(
        "gpu_telemetry_latest",
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("uuid", sa.String(64), nullable=True),
        sa.Column("utilization_pct", sa.Float(), nullable=False),
        sa.Column("memory_used_mib", sa.Integer(), nullable=False),
        sa.Column("temperature_c", sa.Float(), nullable=False),
        sa.Column("power_w", sa.Float(), nullable=False),
        sa.Column("sm_clock_mhz", sa.Integer(), nullable=True),
        sa.Column("ecc_correctable", sa.BigInteger(), nullable=False),
        sa.Column("ecc_uncorrectable", sa.BigInteger(), nullable=False),
        sa.Column("retired_pages", sa.Integer(), nullable=False),
        sa.Column("remap_failed", sa.Boolean(), nullable=False),
        sa.Column("throttle", Json, nullable=False),
        sa.Column("xid", Json, nullable=False),
        sa.Column("bucket_at", UtcDateTime(), nullable=False),
        sa.Column("bucket_samples", sa.Integer(), nullable=False),
        sa.Column("bucket_utilization_sum", sa.Float(), nullable=False),
        sa.Column("bucket_utilization_max", sa.Float(), nullable=False),
        sa.Column("bucket_memory_used_sum", sa.Float(), nullable=False),
        sa.Column("bucket_memory_used_max", sa.Integer(), nullable=False),
        sa.Column("bucket_temperature_sum", sa.Float(), nullable=False),
        sa.Column("bucket_temperature_max", sa.Float(), nullable=False),
        sa.Column("bucket_power_sum", sa.Float(), nullable=False),
        sa.Column("bucket_power_max", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_gpu_telemetry_latest_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "gpu_index", name=op.f("pk_gpu_telemetry_latest")),
    )
    op.create_table(
        "gpu_telemetry_series",
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("bucket_at", UtcDateTime(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("utilization_avg", sa.Float(), nullable=False),
        sa.Column("utilization_max", sa.Float(), nullable=False),
        sa.Column("memory_used_avg_mib", sa.Float(), nullable=False),
        sa.Column("memory_used_max_mib", sa.Integer(), nullable=False),
        sa.Column("temperature_avg_c", sa.Float(), nullable=False),
        sa.Column("temperature_max_c", sa.Float(), nullable=False),
        sa.Column("power_avg_w", sa.Float(), nullable=False),
        sa.Column("power_max_w", sa.Float(), nullable=False),
        sa.Column("ecc_uncorrectable", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_gpu_telemetry_series_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "node_id", "gpu_index", "bucket_at", name=op.f("pk_gpu_telemetry_series")
        ),
    )
    op.create_index(
        "ix_gpu_telemetry_series_bucket_at", "gpu_telemetry_series", ["bucket_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_gpu_telemetry_series_bucket_at", table_name="gpu_telemetry_series")
    op.drop_table("gpu_telemetry_series")
    op.drop_table("gpu_telemetry_latest")
    op.drop_table("node_agent_tokens")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_index("ix_nodes_agent_seen_at")
        batch.drop_column("simulated")
        batch.drop_column("agent_version")
        batch.drop_column("agent_seen_at")
        batch.drop_column("inventory_at")
        batch.drop_column("inventory")
