"""Tenant GPU metrics: an instance's GPUs' latest telemetry and series (``fleet.agent``), only
for instances the caller may see and only the GPUs the instance holds; and ``node_busy``, the
probe the agent's heartbeat asks before it lets a node run active checks."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from neocloud.compute import service
from neocloud.compute.tables import AllocationRow
from neocloud.db.base import table_of
from neocloud.fleet import agent
from neocloud.fleet.agent_schemas import GpuSeriesPointOut, GpuTelemetryOut, InstanceMetricsOut
from neocloud.kernel.clock import ensure_utc
from neocloud.web.deps import Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES)
TAG: list[str | Enum] = ["instances"]
DEFAULT_WINDOW = timedelta(hours=1)
# Active checks take minutes: a node with an allocation starting this soon is not idle.
BUSY_LOOKAHEAD = timedelta(minutes=15)


_ALLOCATIONS = table_of(AllocationRow)
# Built once and run on the session's connection: the heartbeat asks it on every idle beat.
_BUSY = (
    sa.select(_ALLOCATIONS.c.id)
    .where(
        _ALLOCATIONS.c.node_id == sa.bindparam("node_id"),
        _ALLOCATIONS.c.start_at <= sa.bindparam("soon"),
        sa.or_(_ALLOCATIONS.c.end_at.is_(None), _ALLOCATIONS.c.end_at > sa.bindparam("now")),
    )
    .limit(1)
)


def node_busy(s: Session, node_id: str, now: datetime) -> bool:
    """Whether the node holds an allocation now or one that starts within ``BUSY_LOOKAHEAD``."""
    params = {"node_id": node_id, "soon": now + BUSY_LOOKAHEAD, "now": now}
    return s.connection().execute(_BUSY, params).first() is not None


@router.get("/instances/{instance_id}/metrics", response_model=InstanceMetricsOut, tags=TAG)
def get_instance_metrics(
    instance_id: Annotated[str, Path(max_length=40)],
    ctx: Ctx,
    caller: Caller,
    since: Annotated[
        datetime | None,
        Query(
            description="start of the series (RFC 3339); default an hour ago; earlier than "
            "the retention (NEOCLOUD_AGENT_RETENTION_H) is read as the retention's start"
        ),
    ] = None,
) -> InstanceMetricsOut:
    """The instance's GPUs: each one's latest telemetry and its downsampled series (averages
    and maxima per `step_s` bucket) since `since`. Another org's instance is a 404."""
    row = service.get_instance(db=ctx.db, actor=caller, instance_id=instance_id)
    now = ctx.clock.now()
    earliest = now - timedelta(hours=ctx.settings.agent_retention_h)
    start = now - DEFAULT_WINDOW if since is None else ensure_utc(since)
    start = min(max(start, earliest), now)
    indices = list(row.gpu_indices or [])
    latest: list[GpuTelemetryOut] = []
    series: list[GpuSeriesPointOut] = []
    if row.node_id is not None and indices:
        m = agent.gpu_metrics(db=ctx.db, node_id=row.node_id, gpu_indices=indices, since=start)
        latest = [GpuTelemetryOut.of(t) for t in m.latest]
        series = [GpuSeriesPointOut.of(p) for p in m.series]
    return InstanceMetricsOut(
        instance_id=row.id,
        node_id=row.node_id,
        gpu_indices=indices,
        since=start,
        step_s=ctx.settings.agent_series_step_s,
        latest=latest,
        series=series,
    )
