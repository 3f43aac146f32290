"""GPU quotas: registered defaults per GPU model and per-org overrides, in GPUs.

The effective limit of an org for a model is its override, else the model's default, else none
(nothing may be used).

Tenancy sees neither compute nor fleet, so two ports are injected at start-up (``QuotaPorts``,
wired in ``api.platform``): ``usage`` counts the GPUs an org uses per model (compute's count,
the one its quota check uses), and ``models`` names the GPU models a quota may be set for (the
fleet's catalog), so that ``H1OO`` is refused and ``H100`` is stored as ``H100-SXM-80GB``.
Without them usage reads 0 and any well-formed name is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.tenancy import domain
from neocloud.tenancy.access import org_row, require_read, rowcount
from neocloud.tenancy.tables import QuotaDefaultRow, QuotaRow


class GpuUsage(Protocol):
    """GPUs an org uses now, per GPU model (models it does not use may be left out)."""

    def __call__(self, *, db: Database, org_id: str) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class GpuModelNames:
    """The GPU models a quota may name: their canonical names, and ``find`` giving the
    canonical name of a name or alias (None when unknown)."""

    names: tuple[str, ...]
    find: Callable[[str], str | None]

    def canonical(self, name: str) -> str:
        """The canonical name of ``name``; 422 on ``gpu_model`` listing the valid names."""
        found = self.find(name)
        if found is None:
            raise ValidationFailed(
                f"unknown GPU model {name!r}; valid models: {', '.join(self.names)}",
                code="unknown_gpu_model",
                param="gpu_model",
                details={"known": list(self.names)},
            )
        return found


def _no_usage(*, db: Database, org_id: str) -> Mapping[str, int]:
    del db, org_id
    return {}


@dataclass(frozen=True)
class QuotaPorts:
    """What tenancy's quotas need from the contexts it may not import."""

    usage: GpuUsage = _no_usage
    models: GpuModelNames | None = None

    def canonical(self, gpu_model: str) -> str:
        domain.check_gpu_model(gpu_model)
        return gpu_model if self.models is None else self.models.canonical(gpu_model)


NO_PORTS = QuotaPorts()


@dataclass(frozen=True)
class EffectiveQuota:
    org_id: str
    gpu_model: str
    limit_gpus: int
    source: str  # "default" | "override"
    default_gpus: int | None
    usage_gpus: int


def list_quotas(
    *, db: Database, actor: Principal, org_id: str, ports: QuotaPorts = NO_PORTS
) -> list[EffectiveQuota]:
    """The org's effective quota and usage (GPUs) for every GPU model with a default or an
    override."""
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
    usage = ports.usage(db=db, org_id=org_id)
    out = []
    for model in sorted(set(defaults) | set(overrides)):
        limit, source = domain.resolve_quota(defaults.get(model), overrides.get(model))
        assert limit is not None
        assert source is not None
        out.append(
            EffectiveQuota(org_id, model, limit, source, defaults.get(model), usage.get(model, 0))
        )
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
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    org_id: str,
    gpu_model: str,
    limit_gpus: int,
    ports: QuotaPorts = NO_PORTS,
) -> EffectiveQuota:
    """Set an org's override for one GPU model (operator admins); an alias is stored as the
    model's canonical name, an unknown model is a 422."""
    actor.require_operator(write=True)
    gpu_model = ports.canonical(gpu_model)
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
    usage = ports.usage(db=db, org_id=org_id).get(gpu_model, 0)
    return EffectiveQuota(org_id, gpu_model, limit_gpus, "override", default, usage)


def delete_quota(
    *, db: Database, actor: Principal, org_id: str, gpu_model: str, ports: QuotaPorts = NO_PORTS
) -> EffectiveQuota | None:
    """Remove an org's override so the default applies again; returns what is now in force.
    An alias names its model; a name the catalog does not know is taken as it is stored (an
    override set before names were checked can still be removed)."""
    actor.require_operator(write=True)
    domain.check_gpu_model(gpu_model)
    if ports.models is not None:
        gpu_model = ports.models.find(gpu_model) or gpu_model
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
    usage = ports.usage(db=db, org_id=org_id).get(gpu_model, 0)
    return EffectiveQuota(org_id, gpu_model, default, "default", default, usage)


def set_quota_default(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    gpu_model: str,
    limit_gpus: int,
    ports: QuotaPorts = NO_PORTS,
) -> QuotaDefaultRow:
    """Register the default of one GPU model (operator admins); names as in ``set_quota``."""
    actor.require_operator(write=True)
    gpu_model = ports.canonical(gpu_model)
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
