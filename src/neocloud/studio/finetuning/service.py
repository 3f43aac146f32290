"""Fine-tuning jobs: what the API asks (create, read, cancel) and what the worker records
(claim with a lease, events, checkpoints, billing, the result), each one transaction.

The worker's writes name its ``lease_token`` and a state the job must still be in, so a job
cancelled through the API, or claimed by another worker after this one's lease lapsed, is never
written by the old holder (its write matches no row, and it stops).

Training is billed per epoch as the epoch's checkpoint is recorded: a ``tokens`` usage event of
the model's training SKU (``<base>:fine-tuning``, priced per 1M trained tokens) whose id is
``<job>-epoch-<n>``. Billing stores an event id once, so an epoch re-run after a worker restart
is not billed twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import InvalidRequest, NotFound
from neocloud.kernel.ids import random_id
from neocloud.studio.files import Purpose, find_org_file
from neocloud.studio.finetuning.domain import (
    ACTIVE,
    FINAL,
    Hyperparameters,
    JobStatus,
    check_suffix,
    check_transition,
    parse_method,
)
from neocloud.studio.metering import BillingUsageSink, UsageRecord
from neocloud.studio.pricing import publish_missing
from neocloud.studio.tables import (
    FineTuneCheckpointRow,
    FineTunedModelRow,
    FineTuneEventRow,
    FineTuneJobRow,
)

LIST_LIMIT_MAX = 100
SEED_MAX = 2**31 - 1
TRAINING_ENDPOINT = "fine_tuning"
# Per 1M trained tokens, for models whose training price the operator has not set.
DEFAULT_TRAINING_PRICE = Decimal("0.50")


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A model that can be fine-tuned: its catalog id, checkpoint dir and prices per 1M."""

    id: str
    path: Path
    input_price_per_m: Decimal
    output_price_per_m: Decimal
    training_price_per_m: Decimal = DEFAULT_TRAINING_PRICE


def training_sku(base: str) -> str:
    """The price book's model key for training ``base``."""
    return f"{base}:fine-tuning"


def training_prices(models: Mapping[str, BaseModel]) -> dict[str, dict[str, Decimal]]:
    """Price-book entries for training each model (input tokens are the trained tokens)."""
    return {
        training_sku(m.id): {
            "input_per_1m": m.training_price_per_m,
            "output_per_1m": Decimal(0),
            "batch_discount": Decimal(0),
        }
        for m in models.values()
    }


# -- API side -----------------------------------------------------------------------------------


def create_job(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    bases: Mapping[str, BaseModel],
    body: Mapping[str, Any],
    runner: str = "local",
) -> FineTuneJobRow:
    """A job in ``validating_files`` for the caller's org; 400 naming the bad param."""
    known = {
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "hyperparameters",
        "method",
        "metadata",
        "integrations",
    }
    for name in body:
        if name not in known:
            raise InvalidRequest(
                f"unknown parameter {name!r}", code="unknown_parameter", param=name
            )
    model = body.get("model")
    if not isinstance(model, str) or model not in bases:
        offered = ", ".join(sorted(bases)) or "none"
        raise InvalidRequest(
            f"model {model!r} is not available for fine-tuning or does not exist; "
            f"available: {offered}",
            code="model_not_available",
            param="model",
        )
    hp = parse_method(body.get("method"), body.get("hyperparameters"))
    suffix = check_suffix(body.get("suffix"))
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(SEED_MAX)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise InvalidRequest(
            f"seed must be an integer from 0 to {SEED_MAX}", code="invalid_value", param="seed"
        )
    training = _fine_tune_file(db, principal, body.get("training_file"), "training_file")
    validation = body.get("validation_file")
    if validation is not None:
        validation = _fine_tune_file(db, principal, validation, "validation_file")
    now = clock.now()
    with db.transaction() as s:
        row = FineTuneJobRow(
            id=random_id("ftjob", sep="-"),
            org_id=principal.org_id,
            created_by=principal.key_id,
            model=model,
            base_path=str(bases[model].path),
            training_file=training,
            validation_file=validation,
            suffix=suffix,
            seed=seed,
            hyperparameters=hp.as_dict(),
            status=JobStatus.VALIDATING_FILES.value,
            error=None,
            result_files=[],
            epochs_done=0,
            runner=runner,
            attempts=0,
            created_at=now,
        )
        s.add(row)
        s.flush()
        add_event(s, row.id, now, f"Validating training file: {training}")
        s.expunge(row)
        return row


def _fine_tune_file(db: Database, principal: Principal, file_id: Any, param: str) -> str:
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest(
            f"'{param}' is required", code="missing_required_parameter", param=param
        )
    row = find_org_file(db=db, org_id=principal.org_id, file_id=file_id)
    if row is None:
        raise InvalidRequest(
            f"invalid {param}: no file {file_id!r} in your organization",
            code="file_not_found",
            param=param,
        )
    if row.purpose != Purpose.FINE_TUNE:
        raise InvalidRequest(
            f"invalid {param}: {file_id} has purpose {row.purpose!r}, not 'fine-tune'",
            code="invalid_file_purpose",
            param=param,
        )
    return file_id


def _visible_job(s: Session, principal: Principal, job_id: str) -> FineTuneJobRow:
    row = s.get(FineTuneJobRow, job_id)
    if row is None or not (principal.is_operator or row.org_id == principal.org_id):
        raise NotFound(
            f"No such fine-tuning job: {job_id}", code="fine_tuning_job_not_found", param="id"
        )
    return row


def get_job(*, db: Database, principal: Principal, job_id: str) -> FineTuneJobRow:
    with db.transaction() as s:
        row = _visible_job(s, principal, job_id)
        s.expunge(row)
        return row


def list_jobs(
    *, db: Database, principal: Principal, after: str | None, limit: int
) -> tuple[list[FineTuneJobRow], bool]:
    """The caller's org's jobs, newest first; ``after`` a job id pages on."""
    with db.transaction() as s:
        q = sa.select(FineTuneJobRow).where(FineTuneJobRow.org_id == principal.org_id)
        if after is not None:
            mark = s.get(FineTuneJobRow, after)
            if mark is None or mark.org_id != principal.org_id:
                raise InvalidRequest(
                    f"no fine-tuning job {after!r} to list after",
                    code="invalid_cursor",
                    param="after",
                )
            at, col = mark.created_at, FineTuneJobRow.created_at
            q = q.where(sa.or_(col < at, sa.and_(col == at, FineTuneJobRow.id < after)))
        q = q.order_by(FineTuneJobRow.created_at.desc(), FineTuneJobRow.id.desc()).limit(limit + 1)
        rows = list(s.scalars(q))
        for row in rows:
            s.expunge(row)
    return rows[:limit], len(rows) > limit


def cancel_job(*, db: Database, clock: Clock, principal: Principal, job_id: str) -> FineTuneJobRow:
    """Cancel a job that has not finished (a running one stops at its next step); a finished
    one is 409 ``illegal_transition``. Checkpoints and trained epochs stay (and stay billed)."""
    now = clock.now()
    with db.transaction() as s:
        row = _visible_job(s, principal, job_id)
        if row.org_id != principal.org_id:
            principal.require_org_role(row.org_id, Role.MEMBER)
        check_transition(row.status, JobStatus.CANCELLED, action="cancel the fine-tuning job")
        row.status = JobStatus.CANCELLED.value
        row.finished_at = now
        row.lease_token, row.lease_until = None, None
        add_event(s, row.id, now, "Fine-tuning job cancelled")
        s.flush()
        s.expunge(row)
        return row


def _page(
    s: Session, model: Any, job_id: str, after: str | None, limit: int, order_col: Any
) -> tuple[list[Any], bool]:
    q = sa.select(model).where(model.job_id == job_id)
    if after is not None:
        mark = s.get(model, after)
        if mark is None or mark.job_id != job_id:
            raise InvalidRequest(
                f"no item {after!r} to list after", code="invalid_cursor", param="after"
            )
        q = q.where(order_col < getattr(mark, order_col.key))
    rows = list(s.scalars(q.order_by(order_col.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_events(
    *, db: Database, principal: Principal, job_id: str, after: str | None, limit: int
) -> tuple[list[FineTuneEventRow], bool]:
    """A job's events, newest first (OpenAI's order)."""
    with db.transaction() as s:
        _visible_job(s, principal, job_id)
        rows, more = _page(s, FineTuneEventRow, job_id, after, limit, FineTuneEventRow.seq)
        for row in rows:
            s.expunge(row)
        return rows, more


def list_checkpoints(
    *, db: Database, principal: Principal, job_id: str, after: str | None, limit: int
) -> tuple[list[FineTuneCheckpointRow], bool]:
    """A job's checkpoints, the latest first."""
    with db.transaction() as s:
        _visible_job(s, principal, job_id)
        col = FineTuneCheckpointRow.step_number
        rows, more = _page(s, FineTuneCheckpointRow, job_id, after, limit, col)
        for row in rows:
            s.expunge(row)
        return rows, more


def list_models(*, db: Database, org_id: str) -> list[FineTunedModelRow]:
    with db.transaction() as s:
        q = sa.select(FineTunedModelRow).where(FineTunedModelRow.org_id == org_id)
        rows = list(s.scalars(q.order_by(FineTunedModelRow.created_at, FineTunedModelRow.id)))
        for row in rows:
            s.expunge(row)
        return rows


def find_model(*, db: Database, model_id: str) -> FineTunedModelRow | None:
    with db.transaction() as s:
        row = s.get(FineTunedModelRow, model_id)
        if row is not None:
            s.expunge(row)
        return row


def delete_model(*, db: Database, principal: Principal, model_id: str) -> FineTunedModelRow:
    """Remove a fine-tuned model of the caller's org (role admin or higher, as OpenAI asks an
    owner); another org's is 404 ``model_not_found``. Its job keeps its history."""
    with db.transaction() as s:
        row = s.get(FineTunedModelRow, model_id)
        if row is None or not (principal.is_operator or row.org_id == principal.org_id):
            raise NotFound(
                f"the model {model_id!r} does not exist or you do not have access to it",
                code="model_not_found",
                param="model",
            )
        principal.require_org_role(row.org_id, Role.ADMIN)
        s.delete(row)
        s.flush()
        s.expunge(row)
        return row


# -- worker side --------------------------------------------------------------------------------


def add_event(
    s: Session,
    job_id: str,
    now: datetime,
    message: str,
    *,
    level: str = "info",
    kind: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    last = s.scalar(
        sa.select(sa.func.max(FineTuneEventRow.seq)).where(FineTuneEventRow.job_id == job_id)
    )
    s.add(
        FineTuneEventRow(
            id=random_id("ftevent", sep="-"),
            job_id=job_id,
            seq=(last or 0) + 1,
            level=level,
            type=kind,
            message=message[:1000],
            data=data,
            created_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: str
    token: str


def claim_job(*, db: Database, clock: Clock, ttl_s: float) -> tuple[Lease, FineTuneJobRow] | None:
    """Take the oldest active job whose lease is free or lapsed; None when there is none."""
    now = clock.now()
    free = sa.or_(FineTuneJobRow.lease_until.is_(None), FineTuneJobRow.lease_until < now)
    active = [s.value for s in ACTIVE]
    with db.transaction() as s:
        candidates = list(
            s.scalars(
                sa.select(FineTuneJobRow.id)
                .where(FineTuneJobRow.status.in_(active), free)
                .order_by(FineTuneJobRow.created_at, FineTuneJobRow.id)
                .limit(8)
            )
        )
    for job_id in candidates:
        token = secrets.token_hex(16)
        with db.transaction() as s:
            taken = s.execute(
                sa.update(FineTuneJobRow)
                .where(FineTuneJobRow.id == job_id, FineTuneJobRow.status.in_(active), free)
                .values(
                    lease_token=token,
                    lease_until=now + timedelta(seconds=ttl_s),
                    attempts=FineTuneJobRow.attempts + 1,
                )
            )
            if _rowcount(taken) == 1:
                row = s.get(FineTuneJobRow, job_id)
                assert row is not None
                s.expunge(row)
                return Lease(job_id, token), row
    return None


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _held(s: Session, lease: Lease, states: tuple[JobStatus, ...]) -> FineTuneJobRow | None:
    row = s.get(FineTuneJobRow, lease.job_id, with_for_update=True)
    if row is None or row.lease_token != lease.token or row.status not in states:
        return None
    return row


def renew(*, db: Database, clock: Clock, lease: Lease, ttl_s: float) -> bool:
    """Extend the lease; False when the job was cancelled or taken (the holder must stop)."""
    with db.transaction() as s:
        row = _held(s, lease, ACTIVE)
        if row is None:
            return False
        row.lease_until = clock.now() + timedelta(seconds=ttl_s)
        return True


def move(
    *,
    db: Database,
    clock: Clock,
    lease: Lease,
    target: JobStatus,
    message: str,
    reason: str | None = None,
) -> bool:
    """Move the held job to ``target`` with an event; False when no longer held."""
    with db.transaction() as s:
        row = _held(s, lease, ACTIVE)
        if row is None:
            return False
        if row.status != target.value:
            check_transition(row.status, target)
            row.status = target.value
        row.reason = reason
        add_event(s, row.id, clock.now(), message)
        return True


def note(*, db: Database, clock: Clock, lease: Lease, message: str) -> bool:
    """An event on the held running job (where it trains, say); False when no longer held."""
    with db.transaction() as s:
        row = _held(s, lease, (JobStatus.RUNNING,))
        if row is None:
            return False
        add_event(s, row.id, clock.now(), message)
        return True


def wait_queued(
    *, db: Database, clock: Clock, lease: Lease, reason: str, retry_s: float = 0.0
) -> None:
    """The job stays queued for ``reason`` (no capacity); the lease is let go, and the job is
    not claimed again for ``retry_s`` (0: at once)."""
    with db.transaction() as s:
        row = _held(s, lease, (JobStatus.QUEUED,))
        if row is None:
            return
        if row.reason != reason:
            add_event(s, row.id, clock.now(), f"Waiting for capacity: {reason}")
        row.reason = reason
        row.lease_token = None
        row.lease_until = clock.now() + timedelta(seconds=retry_s) if retry_s > 0 else None


def requeue(*, db: Database, clock: Clock, lease: Lease, reason: str, retry_s: float = 0.0) -> bool:
    """A running job lost its capacity (preempted): back to ``queued`` with ``reason``, to
    resume from its last checkpoint (``epochs_done``) once it has capacity again; the lease is
    let go as ``wait_queued`` does. False when no longer held."""
    with db.transaction() as s:
        row = _held(s, lease, (JobStatus.RUNNING,))
        if row is None:
            return False
        check_transition(row.status, JobStatus.QUEUED)
        row.status = JobStatus.QUEUED.value
        row.reason = reason
        add_event(s, row.id, clock.now(), f"Paused: {reason}")
        row.lease_token = None
        row.lease_until = clock.now() + timedelta(seconds=retry_s) if retry_s > 0 else None
        return True


def record_step(
    *, db: Database, clock: Clock, lease: Lease, ttl_s: float, message: str, data: dict[str, Any]
) -> bool:
    """A step's metrics event, renewing the lease; False when no longer held."""
    with db.transaction() as s:
        row = _held(s, lease, (JobStatus.RUNNING,))
        if row is None:
            return False
        now = clock.now()
        row.lease_until = now + timedelta(seconds=ttl_s)
        add_event(s, row.id, now, message, kind="metrics", data=data)
        return True


def record_checkpoint(
    *,
    db: Database,
    clock: Clock,
    lease: Lease,
    epoch: int,
    step: int,
    metrics: dict[str, Any],
    tokens: int,
    model_name: str,
) -> bool:
    """Epoch ``epoch`` done: its checkpoint row and ``epochs_done``; then its tokens billed
    (idempotent on ``<job>-epoch-<n>``). False when no longer held."""
    now = clock.now()
    with db.transaction() as s:
        row = _held(s, lease, (JobStatus.RUNNING,))
        if row is None:
            return False
        exists = s.scalar(
            sa.select(FineTuneCheckpointRow.id).where(
                FineTuneCheckpointRow.job_id == row.id, FineTuneCheckpointRow.step_number == step
            )
        )
        if exists is None:
            s.add(
                FineTuneCheckpointRow(
                    id=random_id("ftckpt", sep="-"),
                    job_id=row.id,
                    step_number=step,
                    epoch=epoch,
                    metrics=metrics,
                    fine_tuned_model_checkpoint=f"{model_name}:ckpt-step-{step}",
                    created_at=now,
                )
            )
        row.epochs_done = max(row.epochs_done, epoch)
        add_event(s, row.id, now, f"Checkpoint created at step {step}")
        org_id, key_id, base = row.org_id, row.created_by, row.model
    bill_epoch(
        db=db,
        clock=clock,
        job_id=lease.job_id,
        org_id=org_id,
        key_id=key_id,
        base=base,
        epoch=epoch,
        tokens=tokens,
    )
    return True


def bill_epoch(
    *,
    db: Database,
    clock: Clock,
    job_id: str,
    org_id: str,
    key_id: str,
    base: str,
    epoch: int,
    tokens: int,
) -> None:
    """One epoch's trained tokens as a billing event (and a ``studio_usage`` row)."""
    record = UsageRecord(
        request_id=f"{job_id}-epoch-{epoch}",
        org_id=org_id,
        key_id=key_id,
        model=training_sku(base),
        endpoint=TRAINING_ENDPOINT,
        prompt_tokens=tokens,
        completion_tokens=0,
        aborted=False,
        created_at=clock.now(),
    )
    BillingUsageSink(db, clock).write([record])


def finish(
    *,
    db: Database,
    clock: Clock,
    lease: Lease,
    model_name: str,
    adapter_path: Path,
    trained_tokens: int,
    base: BaseModel | None,
) -> bool:
    """Succeeded: the model is deployed to the job's org. False when no longer held."""
    now = clock.now()
    with db.transaction() as s:
        row = _held(s, lease, (JobStatus.RUNNING,))
        if row is None:
            return False
        check_transition(row.status, JobStatus.SUCCEEDED)
        s.add(
            FineTunedModelRow(
                id=model_name,
                org_id=row.org_id,
                job_id=row.id,
                base_model=row.model,
                base_path=row.base_path,
                adapter_path=str(adapter_path),
                created_at=now,
            )
        )
        row.status = JobStatus.SUCCEEDED.value
        row.fine_tuned_model = model_name
        row.trained_tokens = trained_tokens
        row.finished_at = now
        row.lease_token, row.lease_until = None, None
        add_event(s, row.id, now, f"New fine-tuned model created: {model_name}")
        add_event(s, row.id, now, "The job has successfully completed")
    if base is not None:  # the model is priced as its base, per 1M tokens
        prices = {"input_per_1m": base.input_price_per_m, "output_per_1m": base.output_price_per_m}
        publish_missing(db=db, clock=clock, prices={model_name: prices})
    return True


def fail(
    *, db: Database, clock: Clock, lease: Lease, code: str, message: str, param: str | None
) -> bool:
    """Failed, with ``error`` filled; False when no longer held."""
    now = clock.now()
    with db.transaction() as s:
        row = _held(s, lease, ACTIVE)
        if row is None:
            return False
        row.status = JobStatus.FAILED.value
        row.error = {"code": code, "message": message, "param": param}
        row.finished_at = now
        row.lease_token, row.lease_until = None, None
        add_event(s, row.id, now, f"Fine-tuning job failed: {message}", level="error")
        return True


def release(*, db: Database, lease: Lease) -> None:
    """Let the lease go (a worker stopping): another worker resumes the job at once."""
    with db.transaction() as s:
        s.execute(
            sa.update(FineTuneJobRow)
            .where(FineTuneJobRow.id == lease.job_id, FineTuneJobRow.lease_token == lease.token)
            .values(lease_token=None, lease_until=None)
        )


def is_final(status: str) -> bool:
    return JobStatus(status) in FINAL


def hyperparameters_of(row: FineTuneJobRow) -> Hyperparameters:
    return Hyperparameters(**row.hyperparameters)
