"""GPU quota as compute counts it: the GPUs an org's live on-demand and spot instances hold,
per GPU model, and the check a create makes against the org's limit (tenancy's)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.domain import INSTANCE_LIVE, QUOTA_CLASSES, Reason
from neocloud.compute.tables import InstanceRow
from neocloud.db.engine import Database
from neocloud.kernel.errors import QuotaExceeded
from neocloud.tenancy.domain import check_quota

_COUNTED = (
    InstanceRow.cls.in_([c.value for c in QUOTA_CLASSES]),
    InstanceRow.state.in_([st.value for st in INSTANCE_LIVE]),
)


def gpus_in_use(s: Session, *, org_id: str, gpu_model: str) -> int:
    """GPUs of the org's live on-demand and spot instances of one model (the quota's usage)."""
    total = s.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(InstanceRow.gpu_count), 0)).where(
            InstanceRow.org_id == org_id, InstanceRow.gpu_model == gpu_model, *_COUNTED
        )
    )
    return int(total or 0)


def gpus_in_use_by_model(*, db: Database, org_id: str) -> dict[str, int]:
    """The org's quota usage for every GPU model it uses (GPUs; models at 0 are left out)."""
    query = (
        sa.select(InstanceRow.gpu_model, sa.func.sum(InstanceRow.gpu_count))
        .where(InstanceRow.org_id == org_id, *_COUNTED)
        .group_by(InstanceRow.gpu_model)
    )
    with db.transaction() as s:
        return {model: int(n) for model, n in s.execute(query) if n}


def check_gpu_quota(
    s: Session, limit: int | None, *, org_id: str, gpu_model: str, requested: int
) -> None:
    """Raise ``QuotaExceeded`` (reason ``quota_exceeded``, with usage and limit) when
    ``requested`` more GPUs of ``gpu_model`` would take the org past ``limit``."""
    usage = gpus_in_use(s, org_id=org_id, gpu_model=gpu_model)
    try:
        check_quota(limit, usage, requested, gpu_model=gpu_model)
    except QuotaExceeded as exc:
        exc.details["reason"] = Reason.QUOTA_EXCEEDED.value
        raise
