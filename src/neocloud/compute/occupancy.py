"""Who holds the fleet's GPUs now, per topology domain: the operator heatmap's tenant colouring.

Read from the open allocation intervals (compute's facts): a GPU reserved by an org and running
one of its instances is held once, by that org (the reservation's own hold on it is not counted
again), so a domain's GPUs held never exceed its GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from neocloud.compute.tables import AllocationRow
from neocloud.db.engine import Database
from neocloud.fleet import service as fleet_service
from neocloud.fleet.tables import NodeDomainRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import ValidationFailed

# A reservation's hold that an instance or cluster of it also holds is counted once.
_HOLDS_GPUS = sa.or_(
    AllocationRow.reservation_id.is_(None),
    sa.and_(AllocationRow.instance_id.is_(None), AllocationRow.cluster_id.is_(None)),
)


@dataclass(frozen=True, slots=True)
class DomainTenant:
    domain: str
    org_id: str
    gpus: int


def tenants_by_domain(
    *, db: Database, clock: Clock, level: str, within: tuple[str, str] | None = None
) -> list[DomainTenant]:
    """GPUs held now per (domain of ``level``, org), over the fleet or ``within`` one domain
    (its level and name). Ordered by domain, then most GPUs first."""
    levels = fleet_service.fleet_levels(db=db)
    for param, value in (("group_by", level), ("within_level", within[0] if within else None)):
        if value is not None and value not in levels:
            raise ValidationFailed(
                f"{param} must be one of the fleet's levels: {', '.join(levels)}",
                code="unknown_level",
                param=param,
            )
    now = clock.now()
    gpus = sa.func.sum(AllocationRow.gpu_count)
    stmt = (
        sa.select(NodeDomainRow.name, AllocationRow.org_id, gpus)
        .join(NodeDomainRow, NodeDomainRow.node_id == AllocationRow.node_id)
        .where(
            NodeDomainRow.level == level,
            AllocationRow.start_at <= now,
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > now),
            _HOLDS_GPUS,
        )
        .group_by(NodeDomainRow.name, AllocationRow.org_id)
    )
    if within is not None:
        inside = sa.select(NodeDomainRow.node_id).where(
            NodeDomainRow.level == within[0], NodeDomainRow.name == within[1]
        )
        stmt = stmt.where(AllocationRow.node_id.in_(inside))
    with db.transaction() as session:
        rows = [DomainTenant(d, o, int(g or 0)) for d, o, g in session.execute(stmt)]
    return sorted(rows, key=lambda r: (r.domain, -r.gpus, r.org_id))
