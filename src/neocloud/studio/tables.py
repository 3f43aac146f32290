"""Studio rows: the per-request usage log, key rate-limit overrides, org budgets and the models
the operator registered.

``studio_usage`` is the studio's own log, one row per request, written in batches by the
metering flusher together with billing's ``tokens`` usage events (which the invoice rates).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Amount, Json, UtcDateTime

ID = sa.String(40)


class StudioUsageRow(Base):
    __tablename__ = "studio_usage"
    __table_args__ = (sa.Index("ix_studio_usage_org_id_created_at", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(64))
    org_id: Mapped[str] = mapped_column(ID)
    key_id: Mapped[str] = mapped_column(ID)
    model: Mapped[str] = mapped_column(sa.String(128))
    endpoint: Mapped[str] = mapped_column(sa.String(32))
    prompt_tokens: Mapped[int] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int] = mapped_column(sa.Integer)
    aborted: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StudioKeyLimitRow(Base):
    """An operator's override of one API key's rate limits (absent: the settings' defaults)."""

    __tablename__ = "studio_key_limits"

    key_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("api_keys.id"), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StudioOrgBudgetRow(Base):
    """What an org may spend on the studio: a token budget per calendar month, or nothing at
    all while suspended (both answer 429 ``insufficient_quota``)."""

    __tablename__ = "studio_org_budgets"

    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), primary_key=True)
    monthly_token_limit: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    suspended: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StudioModelRow(Base):
    """A model the operator registered: a local checkpoint (``path``) or an OpenAI-compatible
    upstream (``upstream_urls``, its replicas, and the name it knows the model by)."""

    __tablename__ = "studio_models"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(16))  # "path" or "upstream"
    path: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    upstream_urls: Mapped[list[str] | None] = mapped_column(Json, nullable=True)
    upstream_model: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    context_length: Mapped[int] = mapped_column(sa.Integer)
    input_price_per_m: Mapped[Decimal] = mapped_column(Amount())
    output_price_per_m: Mapped[Decimal] = mapped_column(Amount())
    flavor: Mapped[str] = mapped_column(sa.String(16))
    deprecated_on: Mapped[date | None] = mapped_column(sa.Date, nullable=True)
    created_by: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StudioFileRow(Base):
    """A file of an org (``/v1/files``): its metadata; the content is in the file store under
    ``storage_key``, never in the database."""

    __tablename__ = "studio_files"
    __table_args__ = (sa.Index("ix_studio_files_org_id_created_at", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # file-<24 hex>
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    purpose: Mapped[str] = mapped_column(sa.String(32))
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    lines: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16))
    storage_key: Mapped[str] = mapped_column(sa.String(200))
    created_by: Mapped[str | None] = mapped_column(ID, nullable=True)  # None: the system
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StudioBatchRow(Base):
    """A batch (``/v1/batches``): its input file, state, counts and lease. The worker that holds
    ``lease_token`` until ``lease_expires_at`` runs it; ``next_index`` is the first request of
    the input not yet done (what a worker resumes from)."""

    __tablename__ = "studio_batches"
    __table_args__ = (
        sa.Index("ix_studio_batches_org_id_created_at", "org_id", "created_at"),
        sa.Index("ix_studio_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # batch_<24 hex>
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"))
    key_id: Mapped[str] = mapped_column(ID)  # the key that created it: its usage's subject
    endpoint: Mapped[str] = mapped_column(sa.String(64))
    input_file_id: Mapped[str] = mapped_column(ID)
    completion_window: Mapped[str] = mapped_column(sa.String(8))
    status: Mapped[str] = mapped_column(sa.String(16))
    batch_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", Json, nullable=True)
    errors: Mapped[list[dict[str, object]] | None] = mapped_column(Json, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    request_total: Mapped[int] = mapped_column(sa.Integer, default=0)
    request_completed: Mapped[int] = mapped_column(sa.Integer, default=0)
    request_failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_index: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Why an ``in_progress`` batch is not running now (the fleet runner: no capacity or quota,
    # preempted); None while it runs.
    queued_reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    in_progress_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finalizing_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class StudioBatchResultRow(Base):
    """One finished request of a batch, its output line as written to the output or error file
    at the end; kept until the batch is finalized."""

    __tablename__ = "studio_batch_results"

    batch_id: Mapped[str] = mapped_column(
        ID, sa.ForeignKey("studio_batches.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    ok: Mapped[bool] = mapped_column(sa.Boolean)
    line: Mapped[str] = mapped_column(sa.Text)


class FineTuneJobRow(Base):
    """A fine-tuning job (``/v1/fine_tuning/jobs``): what was asked, where it is, and the lease
    of the worker running it (``lease_token``, ``lease_until``; results are written only under
    the token). ``epochs_done`` is the last checkpointed epoch, where a new worker resumes."""

    __tablename__ = "studio_ft_jobs"
    __table_args__ = (
        sa.Index("ix_studio_ft_jobs_org_id_created_at", "org_id", "created_at"),
        sa.Index("ix_studio_ft_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # ftjob-<24 hex>
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"))
    created_by: Mapped[str] = mapped_column(ID)  # the key
    model: Mapped[str] = mapped_column(sa.String(128))  # the base model
    base_path: Mapped[str] = mapped_column(sa.String(1000))  # its checkpoint dir
    training_file: Mapped[str] = mapped_column(ID)
    validation_file: Mapped[str | None] = mapped_column(ID, nullable=True)
    suffix: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(sa.String(24))
    reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)  # why still queued
    error: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    result_files: Mapped[list[str]] = mapped_column(Json)
    epochs_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    runner: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The job's MLflow run (studio/finetuning/tracking.py): a resumed job goes on with it.
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)


class FineTuneEventRow(Base):
    """A job's event: a message, or a step's metrics (``data``: step, train_loss, valid_loss)."""

    __tablename__ = "studio_ft_events"
    __table_args__ = (sa.UniqueConstraint("job_id", "seq"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # ftevent-<24 hex>
    job_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("studio_ft_jobs.id"))
    seq: Mapped[int] = mapped_column(sa.Integer)  # order within the job
    level: Mapped[str] = mapped_column(sa.String(8))
    type: Mapped[str] = mapped_column(sa.String(8))  # message | metrics
    message: Mapped[str] = mapped_column(sa.String(1000))
    data: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class FineTuneCheckpointRow(Base):
    """A checkpoint at the end of an epoch: its step, metrics and the adapter saved there."""

    __tablename__ = "studio_ft_checkpoints"
    __table_args__ = (sa.UniqueConstraint("job_id", "step_number"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # ftckpt-<24 hex>
    job_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("studio_ft_jobs.id"))
    step_number: Mapped[int] = mapped_column(sa.Integer)
    epoch: Mapped[int] = mapped_column(sa.Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(Json)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(sa.String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class FineTunedModelRow(Base):
    """A deployed fine-tune: served to ``org_id`` only, as the base model plus the adapter."""

    __tablename__ = "studio_ft_models"

    id: Mapped[str] = mapped_column(sa.String(256), primary_key=True)  # ft:<base>:<org>:…
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), index=True)
    job_id: Mapped[str] = mapped_column(ID)
    base_model: Mapped[str] = mapped_column(sa.String(128))
    base_path: Mapped[str] = mapped_column(sa.String(1000))
    adapter_path: Mapped[str] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
