"""GPU quotas: registered defaults per GPU model and per-org overrides, in GPUs.

The effective limit of an org for a model is its override, else the model's default, else none
(nothing may be used). ``usage`` is reported as 0 until compute counts allocations.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound
from neocloud.kernel.ids import new_id
from neocloud.tenancy import domain
from neocloud.tenancy.access import org_row, require_read, rowcount
from neocloud.tenancy.tables import QuotaDefaultRow, QuotaRow


@dataclass(frozen=True)
class EffectiveQuota:
    org_id: str
    gpu_model: str
    limit_gpus: int
    source: str  # "default" | "override"
    default_gpus: int | None
    usage_gpus: int


def list_quotas(*, db: Database, actor: Principal, org_id: str) -> list[EffectiveQuota]:
    """The org's effective quota for every GPU model with a default or an override."""
    require_read(actor, org_id)
    with db.transaction() as s:
        org_row(s, org_id)
        defaults = dict(
            s.execute(sa.select(QuotaDefaultRow.gpu_model, QuotaDefaultRow.limit_gpus)).all()
        )
        overrides = dict(
            s.execute(
                sa.select(QuotaRow.gpu_model, QuotaRow.limit_gpus).where(QuotaRow.org_id == org_id)
            ).all()
        )
    out = []
    for model in sorted(set(defaults) | set(overrides)):
        limit, source = domain.resolve_quota(defaults.get(model), overrides.get(model))
        assert limit is not None
        assert source is not None
        out.append(EffectiveQuota(org_id, model, limit, source, defaults.get(model), 0))
    return out


def effective_quota(*, db: Database, org_id: str, gpu_model: str) -> int | None:
    """The org's limit in GPUs for ``gpu_model``: its override, else the default, else None."""
    with db.transaction() as s:
        override = s.scalar(
            sa.select(QuotaRow.limit_gpus).where(
                QuotaRow.org_id == org_id, QuotaRow.gpu_model == gpu_model
            )
        )
        default = s.scalar(
            sa.select(QuotaDefaultRow.limit_gpus).where(QuotaDefaultRow.gpu_model == gpu_model)
        )
    return domain.resolve_quota(default, override)[0]


def set_quota(
    *, db: Database, clock: Clock, actor: Principal, org_id: str, gpu_model: str, limit_gpus: int
) -> EffectiveQuota:
    """Set an org's override for one GPU model (operator admins)."""
    actor.require_operator(write=True)
    domain.check_gpu_model(gpu_model)
    now = clock.now()
    with db.transaction() as s:
        org_row(s, org_id)
        updated = rowcount(
            s.execute(
                sa.update(QuotaRow)
                .where(QuotaRow.org_id == org_id, QuotaRow.gpu_model == gpu_model)
                .values(limit_gpus=limit_gpus, updated_at=now)
            )
        )
        if not updated:
            s.add(
                QuotaRow(
                    id=new_id("quo"),
                    org_id=org_id,
                    gpu_model=gpu_model,
                    limit_gpus=limit_gpus,
                    created_at=now,
                    updated_at=now,
                )
            )
        default = s.scalar(
            sa.select(QuotaDefaultRow.limit_gpus).where(QuotaDefaultRow.gpu_model == gpu_model)
        )
    return EffectiveQuota(org_id, gpu_model, limit_gpus, "override", default, 0)


def delete_quota(
    *, db: Database, actor: Principal, org_id: str, gpu_model: str
) -> EffectiveQuota | None:
    """Remove an org's override so the default applies again; returns what is now in force."""
    actor.require_operator(write=True)
    domain.check_gpu_model(gpu_model)
    with db.transaction() as s:
        org_row(s, org_id)
        gone = rowcount(
            s.execute(
                sa.delete(QuotaRow).where(
                    QuotaRow.org_id == org_id, QuotaRow.gpu_model == gpu_model
                )
            )
        )
        if not gone:
            raise NotFound(
                f"the organization has no quota override for {gpu_model}",
                code="quota_not_found",
                param="gpu_model",
            )
        default = s.scalar(
            sa.select(QuotaDefaultRow.limit_gpus).where(QuotaDefaultRow.gpu_model == gpu_model)
        )
    if default is None:
        return None
    return EffectiveQuota(org_id, gpu_model, default, "default", default, 0)


def set_quota_default(
    *, db: Database, clock: Clock, actor: Principal, gpu_model: str, limit_gpus: int
) -> QuotaDefaultRow:
    actor.require_operator(write=True)
    domain.check_gpu_model(gpu_model)
    now = clock.now()
    with db.transaction() as s:
        row = s.get(QuotaDefaultRow, gpu_model)
        if row is None:
            row = QuotaDefaultRow(gpu_model=gpu_model, limit_gpus=limit_gpus, updated_at=now)
            s.add(row)
        else:
            row.limit_gpus, row.updated_at = limit_gpus, now
    return row


def list_quota_defaults(
    *, db: Database, actor: Principal, limit: int, after: str | None
) -> Page[QuotaDefaultRow]:
    del actor  # every authenticated caller may read the registered defaults
    with db.transaction() as s:
        return paginate(
            s, sa.select(QuotaDefaultRow), QuotaDefaultRow.gpu_model, limit=limit, after=after
        )
