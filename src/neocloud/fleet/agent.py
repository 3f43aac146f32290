"""The node agent's control-plane side: agent tokens, heartbeats, telemetry, silence.

* An agent token (``nca_…``) is issued per node by an operator admin, shown once and kept as
  its sha256 (as API keys are: 256 random bits need no slow hash); one live token per node.
  It authenticates only the heartbeat, and only for its own node.
* A heartbeat is one transaction of a handful of statements: the node (found by the token's
  hash, locked), the GPUs' latest rows (read, then upserted in one statement), a series row per
  GPU only when a heartbeat opens a new bucket, and the node's row. Health results are written
  only when they change (``fleet.service.apply_checks``), so a steady node writes no history.
* The worker fails nodes whose agent fell silent and prunes the series past its retention.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from neocloud.db.base import table_of
from neocloud.db.engine import Database
from neocloud.fleet import domain, health_rules
from neocloud.fleet.agent_schemas import GpuTelemetryIn, HeartbeatIn
from neocloud.fleet.domain import CheckStatus, NodeState
from neocloud.fleet.service import CheckResult, apply_checks, change_node, get_node
from neocloud.fleet.tables import (
    AgentTokenRow,
    GpuTelemetryLatestRow,
    GpuTelemetrySeriesRow,
    HealthCheckRow,
    NodeRow,
)
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import AuthenticationFailed, NotFound, PermissionDenied

TOKEN_SCHEME = "nca_"  # noqa: S105 - the prefix, not a token
TOKEN_ENTROPY_BYTES = 32
TOKEN_PREFIX_LENGTH = 12
TOKEN_MAX_LENGTH = 128
ACTOR = "agent"
HEARTBEAT_CHECK = "agent.heartbeat"
# States in which a silent agent fails its node; in the others (enrolled, maintenance, repair,
# failed, retired) an operator has the node in hand and the agent may well be down.
WATCHED_STATES = tuple(
    s.value
    for s in NodeState
    if s
    not in (
        NodeState.ENROLLED,
        NodeState.MAINTENANCE,
        NodeState.REPAIR,
        NodeState.FAILED,
        NodeState.RETIRED,
    )
)
IDLE_STATES = (NodeState.AVAILABLE.value, NodeState.BURN_IN.value)
LATEST = table_of(GpuTelemetryLatestRow)
SERIES = table_of(GpuTelemetrySeriesRow)
MAX_SERIES_POINTS = 20_000  # a metrics read answers at most this many series points

# (session, node id, now) -> whether compute has an allocation on the node now or soon; compute
# plugs it in (an agent must never run active checks on a tenant's node).
BusyProbe = Callable[[Session, str, datetime], bool]


@dataclass(frozen=True)
class AgentPolicy:
    """The agent settings the heartbeat needs (``NEOCLOUD_AGENT_*``)."""

    interval_s: float = 10.0
    series_step_s: int = 60


@dataclass(frozen=True)
class IssuedToken:
    node_id: str
    token: str  # shown once
    created_at: datetime


@dataclass(frozen=True)
class HeartbeatResult:
    interval_s: float
    node_state: str
    run_active_checks: bool


def hash_token(token: str) -> str:
    """The sha256 hex digest of the whole token, as stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_agent_token(token: str) -> bool:
    return token.startswith(TOKEN_SCHEME)


# --- tokens ------------------------------------------------------------------------------------


def issue_agent_token(*, db: Database, clock: Clock, node_id: str, actor: str) -> IssuedToken:
    """A new token for the node's agent; the node's previous token stops working."""
    now = clock.now()
    token = TOKEN_SCHEME + secrets.token_urlsafe(TOKEN_ENTROPY_BYTES)
    with db.transaction() as s:
        node = s.get(NodeRow, node_id, with_for_update=True)
        if node is None:
            raise NotFound(f"no node {node_id}", code="node_not_found", param="node_id")
        s.execute(sa.delete(AgentTokenRow).where(AgentTokenRow.node_id == node_id))
        # A new token means a new agent: the silence watch starts again at its first heartbeat
        # (a node failed for silence, repaired and burnt in again is not failed at once).
        node.agent_seen_at = None
        s.add(
            AgentTokenRow(
                node_id=node_id,
                token_hash=hash_token(token),
                prefix=token[:TOKEN_PREFIX_LENGTH],
                created_at=now,
                created_by=actor[:64],
            )
        )
    return IssuedToken(node_id, token, now)


def revoke_agent_token(*, db: Database, node_id: str) -> None:
    """Revoke the node's token; the node is no longer watched for silence until an agent with
    a new token heartbeats. 404 when the node has no token."""
    with db.transaction() as s:
        node = s.get(NodeRow, node_id, with_for_update=True)
        if node is None:
            raise NotFound(f"no node {node_id}", code="node_not_found", param="node_id")
        gone = s.execute(sa.delete(AgentTokenRow).where(AgentTokenRow.node_id == node_id))
        if not getattr(gone, "rowcount", 0):
            raise NotFound(
                f"node {node_id} has no agent token", code="agent_token_not_found", param="node_id"
            )
        node.agent_seen_at = None


def _invalid() -> AuthenticationFailed:
    return AuthenticationFailed("the agent token is not valid", code="invalid_agent_token")


# --- heartbeats --------------------------------------------------------------------------------


def heartbeat(
    *,
    db: Database,
    clock: Clock,
    token: str,
    beat: HeartbeatIn,
    policy: AgentPolicy,
    busy: BusyProbe | None = None,
) -> HeartbeatResult:
    """Record one heartbeat from the agent holding ``token``: 401 for an unknown or revoked
    token, 403 ``agent_wrong_node`` when it names another node than the token's."""
    if not is_agent_token(token) or len(token) > TOKEN_MAX_LENGTH or not token.isascii():
        raise _invalid()
    now = clock.now()
    with db.transaction() as s:
        node = s.scalars(
            sa.select(NodeRow)
            .join(AgentTokenRow, AgentTokenRow.node_id == NodeRow.id)
            .where(AgentTokenRow.token_hash == hash_token(token))
            .with_for_update(of=NodeRow)
        ).first()
        if node is None or node.state == NodeState.RETIRED.value:
            raise _invalid()
        if beat.node_id != node.id:
            raise PermissionDenied(
                "this agent token reports for another node", code="agent_wrong_node"
            )
        uuids = {g.index: g.uuid for g in beat.inventory.gpus} if beat.inventory else {}
        _record_telemetry(s, node.id, beat.telemetry, uuids, now, policy.series_step_s)
        names = None
        if beat.inventory is not None:
            node.inventory = beat.inventory.model_dump(mode="json")
            node.inventory_at = now
            names = [g.name for g in beat.inventory.gpus]
        node.agent_seen_at = now
        node.agent_version = beat.agent_version
        node.simulated = beat.simulated
        results = health_rules.evaluate(
            gpus=[_sample(t) for t in beat.telemetry],
            inventory_names=names,
            gpu_count=node.gpu_count,
            gpu_model=node.gpu_model,
            checks=[health_rules.AgentCheck(c.name, c.status, c.message) for c in beat.checks],
        )
        checks = [CheckResult(r.name, r.status, r.message) for r in results]
        checks.append(CheckResult(HEARTBEAT_CHECK, CheckStatus.PASS))
        apply_checks(s, node, checks, now, ACTOR, changes_only=True)
        idle = node.state in IDLE_STATES and node.drain_requested_at is None
        if idle and busy is not None:
            idle = not busy(s, node.id, now)
        return HeartbeatResult(policy.interval_s, node.state, idle)


def _sample(t: GpuTelemetryIn) -> health_rules.GpuSample:
    return health_rules.GpuSample(
        index=t.index,
        ecc_uncorrectable=t.ecc_uncorrectable,
        remap_failed=t.remap_failed,
        temperature_c=t.temperature_c,
        throttle=tuple(t.throttle),
        xid=tuple(t.xid),
    )


def bucket_of(at: datetime, step_s: int) -> datetime:
    """The start of ``at``'s series bucket (buckets are aligned on the epoch)."""
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step_s, tz=at.tzinfo)


def _record_telemetry(
    s: Session,
    node_id: str,
    telemetry: Sequence[GpuTelemetryIn],
    uuids: dict[int, str],
    now: datetime,
    step_s: int,
) -> None:
    if not telemetry:
        return
    bucket = bucket_of(now, step_s)
    prev = {
        r.gpu_index: r
        for r in s.scalars(
            sa.select(GpuTelemetryLatestRow).where(GpuTelemetryLatestRow.node_id == node_id)
        )
    }
    latest: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []
    for t in {t.index: t for t in telemetry}.values():  # one row per GPU, the last one wins
        p = prev.get(t.index)
        acc = p is not None and p.bucket_at == bucket
        if p is not None and not acc and p.bucket_samples > 0:
            finished.append(_series_row(p))
        n = (p.bucket_samples if acc and p else 0) + 1
        row = {
            "node_id": node_id,
            "gpu_index": t.index,
            "at": now,
            "uuid": uuids.get(t.index),
            "utilization_pct": t.utilization_pct,
            "memory_used_mib": t.memory_used_mib,
            "temperature_c": t.temperature_c,
            "power_w": t.power_w,
            "sm_clock_mhz": t.sm_clock_mhz,
            "ecc_correctable": t.ecc_correctable,
            "ecc_uncorrectable": t.ecc_uncorrectable,
            "retired_pages": t.retired_pages,
            "remap_failed": t.remap_failed,
            "throttle": list(t.throttle),
            "xid": list(t.xid),
            "bucket_at": bucket,
            "bucket_samples": n,
        }
        for name, value in (
            ("utilization", t.utilization_pct),
            ("memory_used", t.memory_used_mib),
            ("temperature", t.temperature_c),
            ("power", t.power_w),
        ):
            old_sum = getattr(p, f"bucket_{name}_sum") if acc and p else 0.0
            old_max = getattr(p, f"bucket_{name}_max") if acc and p else value
            row[f"bucket_{name}_sum"] = old_sum + value
            row[f"bucket_{name}_max"] = max(old_max, value)
        latest.append(row)
    _upsert_latest(s, latest)
    if finished:
        s.execute(_insert(s, SERIES).on_conflict_do_nothing(), finished)


def _insert(s: Session, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_*`` on SQLite and PostgreSQL alike."""
    dialect = s.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _upsert_latest(s: Session, rows: list[dict[str, Any]]) -> None:
    stmt = _insert(s, LATEST)
    update: dict[str, Any] = {
        c.name: stmt.excluded[c.name]
        for c in LATEST.columns
        if c.name not in ("node_id", "gpu_index")
    }
    update["uuid"] = sa.func.coalesce(stmt.excluded.uuid, LATEST.c.uuid)  # sent with inventories
    s.execute(
        stmt.on_conflict_do_update(index_elements=["node_id", "gpu_index"], set_=update), rows
    )


def _series_row(p: GpuTelemetryLatestRow) -> dict[str, Any]:
    n = p.bucket_samples
    return {
        "node_id": p.node_id,
        "gpu_index": p.gpu_index,
        "bucket_at": p.bucket_at,
        "samples": n,
        "utilization_avg": p.bucket_utilization_sum / n,
        "utilization_max": p.bucket_utilization_max,
        "memory_used_avg_mib": p.bucket_memory_used_sum / n,
        "memory_used_max_mib": int(p.bucket_memory_used_max),
        "temperature_avg_c": p.bucket_temperature_sum / n,
        "temperature_max_c": p.bucket_temperature_max,
        "power_avg_w": p.bucket_power_sum / n,
        "power_max_w": p.bucket_power_max,
        "ecc_uncorrectable": p.ecc_uncorrectable,
    }


# --- the worker's steps ----------------------------------------------------------------------


def fail_silent_nodes(*, db: Database, clock: Clock, silence_s: float) -> list[str]:
    """Fail every watched node whose agent heartbeated once and then not for ``silence_s``
    seconds (reason ``agent silent for N s``); compute then fails or heals its workloads."""
    now = clock.now()
    cutoff = now - timedelta(seconds=silence_s)
    with db.transaction() as s:
        silent = list(
            s.scalars(
                sa.select(NodeRow)
                .where(NodeRow.agent_seen_at < cutoff, NodeRow.state.in_(WATCHED_STATES))
                .order_by(NodeRow.id)
                .with_for_update()
            )
        )
        for node in silent:
            assert node.agent_seen_at is not None  # the query's condition
            quiet = int((now - node.agent_seen_at).total_seconds())
            why = f"agent silent for {quiet} s"
            change_node(s, node, domain.fail, now, why, ACTOR)  # first: the move's reason
            apply_checks(s, node, [CheckResult(HEARTBEAT_CHECK, CheckStatus.FAIL, why)], now, ACTOR)
    return [n.id for n in silent]


def prune_telemetry(*, db: Database, clock: Clock, retention_s: float) -> int:
    """Delete series rows older than the retention; returns how many went."""
    cutoff = clock.now() - timedelta(seconds=retention_s)
    with db.transaction() as s:
        gone = s.execute(
            sa.delete(GpuTelemetrySeriesRow).where(GpuTelemetrySeriesRow.bucket_at < cutoff)
        )
        return int(getattr(gone, "rowcount", 0) or 0)


def revoke_retired_tokens(*, db: Database) -> int:
    """Revoke the agent tokens of retired nodes (a retired node never reports again); returns
    how many went."""
    with db.transaction() as s:
        gone = s.execute(
            sa.delete(AgentTokenRow)
            .where(
                AgentTokenRow.node_id.in_(
                    sa.select(NodeRow.id).where(NodeRow.state == NodeState.RETIRED.value)
                )
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(gone, "rowcount", 0) or 0)


def run_agent_steps(*, db: Database, clock: Clock, silence_s: float, retention_s: float) -> None:
    """The worker's agent step: fail nodes whose agent fell silent, revoke retired nodes'
    tokens, prune old telemetry."""
    fail_silent_nodes(db=db, clock=clock, silence_s=silence_s)
    revoke_retired_tokens(db=db)
    prune_telemetry(db=db, clock=clock, retention_s=retention_s)


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeHealth:
    node: NodeRow
    history: list[HealthCheckRow]  # newest first
    telemetry: list[GpuTelemetryLatestRow]
    token_issued_at: datetime | None


def node_health(*, db: Database, node_id: str, history: int = 50) -> NodeHealth:
    """The node with its latest check history (newest first), GPU telemetry and token status."""
    node = get_node(db=db, node_id=node_id)
    with db.transaction() as s:
        rows = list(
            s.scalars(
                sa.select(HealthCheckRow)
                .where(HealthCheckRow.node_id == node_id)
                .order_by(HealthCheckRow.id.desc())
                .limit(history)
            )
        )
        telemetry = list(
            s.scalars(
                sa.select(GpuTelemetryLatestRow)
                .where(GpuTelemetryLatestRow.node_id == node_id)
                .order_by(GpuTelemetryLatestRow.gpu_index)
            )
        )
        issued = s.scalar(
            sa.select(AgentTokenRow.created_at).where(AgentTokenRow.node_id == node_id)
        )
    return NodeHealth(node, rows, telemetry, issued)


@dataclass(frozen=True)
class GpuMetrics:
    latest: list[GpuTelemetryLatestRow]
    series: list[GpuTelemetrySeriesRow]  # oldest first; the open bucket last


def gpu_metrics(
    *, db: Database, node_id: str, gpu_indices: Sequence[int], since: datetime
) -> GpuMetrics:
    """The latest telemetry and the series since ``since`` of some GPUs of a node (the bucket
    in progress included, from its running sums), at most ``MAX_SERIES_POINTS`` points."""
    indices = sorted(set(gpu_indices))
    with db.transaction() as s:
        latest = list(
            s.scalars(
                sa.select(GpuTelemetryLatestRow)
                .where(
                    GpuTelemetryLatestRow.node_id == node_id,
                    GpuTelemetryLatestRow.gpu_index.in_(indices),
                )
                .order_by(GpuTelemetryLatestRow.gpu_index)
            )
        )
        series = list(
            s.scalars(
                sa.select(GpuTelemetrySeriesRow)
                .where(
                    GpuTelemetrySeriesRow.node_id == node_id,
                    GpuTelemetrySeriesRow.gpu_index.in_(indices),
                    GpuTelemetrySeriesRow.bucket_at >= since,
                )
                .order_by(GpuTelemetrySeriesRow.bucket_at, GpuTelemetrySeriesRow.gpu_index)
                .limit(MAX_SERIES_POINTS)
            )
        )
        s.expunge_all()
    open_buckets = [
        GpuTelemetrySeriesRow(**_series_row(r))
        for r in latest
        if r.bucket_samples > 0 and r.bucket_at >= since
    ]
    return GpuMetrics(latest, (series + open_buckets)[:MAX_SERIES_POINTS])
