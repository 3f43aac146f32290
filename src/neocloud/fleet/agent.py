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

import functools
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
    token, 403 ``agent_wrong_node`` when it names another node than the token's.

    The steady beat is a few prepared Core statements (the node by its token's hash, locked;
    the GPUs' latest rows; their upsert; the node's row); the ORM is used only on a beat whose
    check results change the node's health (rare), through ``apply_checks`` as before."""
    if not is_agent_token(token) or len(token) > TOKEN_MAX_LENGTH or not token.isascii():
        raise _invalid()
    now = clock.now()
    with db.transaction() as s:
        return _record(s, now, token, beat, policy, busy)


Refusal = AuthenticationFailed | PermissionDenied


def heartbeats(
    *,
    db: Database,
    clock: Clock,
    beats: Sequence[tuple[str, HeartbeatIn]],
    policy: AgentPolicy,
    busy: BusyProbe | None = None,
) -> list[HeartbeatResult | Refusal]:
    """Record several agents' heartbeats (``(token, beat)``), each as ``heartbeat`` would, in
    one transaction and a handful of statements for all of them: the nodes by their tokens'
    hashes (locked, in id order), their GPUs' latest rows, one upsert of every GPU's row, the
    closed buckets' series rows, the nodes' rows (one statement per set of changed columns).
    A refused beat (its token unknown, a retired node's or another node's) gets its refusal in
    its place and writes nothing; any other error rolls all of them back and propagates."""
    now = clock.now()
    out: list[HeartbeatResult | Refusal | None] = [None] * len(beats)
    hashes: dict[int, str] = {}
    for i, (token, _) in enumerate(beats):
        if not is_agent_token(token) or len(token) > TOKEN_MAX_LENGTH or not token.isascii():
            out[i] = _invalid()
        else:
            hashes[i] = hash_token(token)
    with db.transaction() as s:
        conn = s.connection()
        found = {}
        if hashes:
            params = {"token_hashes": sorted(set(hashes.values()))}
            found = {r.token_hash: r for r in conn.execute(_NODES_BY_TOKENS, params)}
        merged: dict[str, tuple[int, Any, HeartbeatIn]] = {}  # node id -> (index, node, beat)
        again: list[int] = []  # a second beat of a node in the batch: recorded after, alone
        for i, digest in hashes.items():
            node, beat = found.get(digest), beats[i][1]
            if node is None or node.state == NodeState.RETIRED.value:
                out[i] = _invalid()
            elif beat.node_id != node.id:
                out[i] = _wrong_node()
            elif node.id in merged:
                again.append(i)
            else:
                merged[node.id] = (i, node, beat)
        prev: dict[str, dict[int, Any]] = {n: {} for n in merged}
        if any(beat.telemetry for _, _, beat in merged.values()):
            for r in conn.execute(_PREVIOUS_OF_NODES, {"node_ids": sorted(merged)}):
                prev[r.node_id][r.gpu_index] = r
        latest: list[dict[str, Any]] = []
        finished: list[dict[str, Any]] = []
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        states: dict[str, str] = {}
        for node_id, (_, node, beat) in merged.items():
            uuids = {g.index: g.uuid for g in beat.inventory.gpus} if beat.inventory else {}
            rows, closed = _telemetry_rows(
                node_id, beat.telemetry, uuids, prev[node_id], now, policy.series_step_s
            )
            latest += rows
            finished += closed
            values, checks = _node_values(node, beat, now)
            if _changes(node.health_checks, checks):
                states[node_id] = _apply_with_orm(s, node_id, values, checks, now)
            else:
                updates.setdefault(tuple(values), []).append({"node_id": node_id, **values})
                states[node_id] = node.state
        for columns, rows in updates.items():
            conn.execute(_update_node(columns), rows)
        _write_telemetry(conn, latest, finished)
        for node_id, (i, node, _) in merged.items():
            out[i] = _result(s, node, states[node_id], now, policy, busy)
        for i in again:
            try:
                out[i] = _record(s, now, beats[i][0], beats[i][1], policy, busy)
            except (AuthenticationFailed, PermissionDenied) as refused:  # before any write
                out[i] = refused
    return [r for r in out if r is not None]


def _record(
    s: Session,
    now: datetime,
    token: str,
    beat: HeartbeatIn,
    policy: AgentPolicy,
    busy: BusyProbe | None,
) -> HeartbeatResult:
    """One heartbeat inside the caller's transaction; refusals are raised before any write."""
    conn = s.connection()
    node = conn.execute(_NODE_BY_TOKEN, {"token_hash": hash_token(token)}).first()
    if node is None or node.state == NodeState.RETIRED.value:  # a retired node never reports
        raise _invalid()
    if beat.node_id != node.id:
        raise _wrong_node()
    uuids = {g.index: g.uuid for g in beat.inventory.gpus} if beat.inventory else {}
    _record_telemetry(conn, node.id, beat.telemetry, uuids, now, policy.series_step_s)
    values, checks = _node_values(node, beat, now)
    if _changes(node.health_checks, checks):
        state = _apply_with_orm(s, node.id, values, checks, now)
    else:
        conn.execute(_update_node(tuple(values)), {"node_id": node.id, **values})
        state = node.state
    return _result(s, node, state, now, policy, busy)


def _wrong_node() -> PermissionDenied:
    return PermissionDenied("this agent token reports for another node", code="agent_wrong_node")


def _node_values(
    node: Any, beat: HeartbeatIn, now: datetime
) -> tuple[dict[str, Any], list[CheckResult]]:
    """What a beat changes on its node's row (``node``: a ``_NODE_COLUMNS`` row), and the
    check results the health rules give it."""
    values: dict[str, Any] = {"agent_seen_at": now}
    names = None
    if beat.inventory is not None:
        values["inventory"] = beat.inventory.model_dump(mode="json")
        values["inventory_at"] = now
        names = [g.name for g in beat.inventory.gpus]
    if node.agent_version != beat.agent_version:
        values["agent_version"] = beat.agent_version
    if node.simulated is not beat.simulated:
        values["simulated"] = beat.simulated
    results = health_rules.evaluate(
        gpus=[_sample(t) for t in beat.telemetry],
        inventory_names=names,
        gpu_count=node.gpu_count,
        gpu_model=node.gpu_model,
        checks=[health_rules.AgentCheck(c.name, c.status, c.message) for c in beat.checks],
    )
    checks = [CheckResult(r.name, r.status, r.message) for r in results]
    checks.append(CheckResult(HEARTBEAT_CHECK, CheckStatus.PASS))
    return values, checks


def _apply_with_orm(
    s: Session, node_id: str, values: dict[str, Any], checks: list[CheckResult], now: datetime
) -> str:
    """A beat whose results change the node's health: through the ORM and ``apply_checks``
    (history rows, the node's health, a failure's state change); returns the node's state."""
    row = s.get(NodeRow, node_id)  # locked already
    assert row is not None
    for name, value in values.items():
        setattr(row, name, value)
    apply_checks(s, row, checks, now, ACTOR, changes_only=True)
    s.flush()  # before Core statements read the node again
    return row.state


def _result(
    s: Session,
    node: Any,
    state: str,
    now: datetime,
    policy: AgentPolicy,
    busy: BusyProbe | None,
) -> HeartbeatResult:
    idle = state in IDLE_STATES and node.drain_requested_at is None
    if idle and busy is not None:
        idle = not busy(s, node.id, now)
    return HeartbeatResult(policy.interval_s, state, idle)


_NODES = table_of(NodeRow)
_TOKENS = table_of(AgentTokenRow)
# What a heartbeat reads of its node, by the token's hash, locked (FOR UPDATE OF nodes on
# PostgreSQL; SQLite's BEGIN IMMEDIATE holds the write lock already). Built once: a statement
# built per beat costs more CPU than running it.
_NODE_COLUMNS = (
    _NODES.c.id,
    _NODES.c.state,
    _NODES.c.drain_requested_at,
    _NODES.c.gpu_count,
    _NODES.c.gpu_model,
    _NODES.c.health_checks,
    _NODES.c.agent_version,
    _NODES.c.simulated,
)
_NODE_BY_TOKEN = (
    sa.select(*_NODE_COLUMNS)
    .join(_TOKENS, _TOKENS.c.node_id == _NODES.c.id)
    .where(_TOKENS.c.token_hash == sa.bindparam("token_hash"))
    .with_for_update(of=_NODES)
)
# A batch's nodes, locked in id order (as the worker locks them: no deadlock between the two).
_NODES_BY_TOKENS = (
    sa.select(*_NODE_COLUMNS, _TOKENS.c.token_hash)
    .join(_TOKENS, _TOKENS.c.node_id == _NODES.c.id)
    .where(_TOKENS.c.token_hash.in_(sa.bindparam("token_hashes", expanding=True)))
    .order_by(_NODES.c.id)
    .with_for_update(of=_NODES)
)


@functools.cache
def _update_node(columns: tuple[str, ...]) -> sa.Update:
    """``UPDATE nodes SET <columns> WHERE id = :node_id``, built once per set of columns."""
    return (
        sa.update(_NODES)
        .where(_NODES.c.id == sa.bindparam("node_id"))
        .values({c: sa.bindparam(c, type_=_NODES.c[c].type) for c in columns})
    )


def _changes(latest: dict[str, Any] | None, checks: Sequence[CheckResult]) -> bool:
    """Whether ``apply_checks(changes_only=True)`` would write anything: a check whose status
    or message differs from the node's latest result for it."""
    latest = latest or {}
    for check in checks:
        before = latest.get(check.name)
        if before is None or (before.get("status"), before.get("message")) != (
            check.status.value,
            check.message,
        ):
            return True
    return False


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
    conn: sa.Connection,
    node_id: str,
    telemetry: Sequence[GpuTelemetryIn],
    uuids: dict[int, str],
    now: datetime,
    step_s: int,
) -> None:
    if not telemetry:
        return
    prev = {r.gpu_index: r for r in conn.execute(_PREVIOUS, {"node_id": node_id})}
    latest, finished = _telemetry_rows(node_id, telemetry, uuids, prev, now, step_s)
    _write_telemetry(conn, latest, finished)


def _write_telemetry(
    conn: sa.Connection, latest: list[dict[str, Any]], finished: list[dict[str, Any]]
) -> None:
    statements = _statements(conn.dialect.name)
    if latest:
        conn.execute(statements.upsert, latest)
    if finished:
        conn.execute(statements.series, finished)


def _telemetry_rows(
    node_id: str,
    telemetry: Sequence[GpuTelemetryIn],
    uuids: dict[int, str],
    prev: dict[int, Any],
    now: datetime,
    step_s: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A node's GPUs' new latest rows (running sums carried within the bucket) and the series
    rows of the buckets this beat closes, from its GPUs' previous latest rows (by index)."""
    bucket = bucket_of(now, step_s)
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
    return latest, finished


# The GPUs' latest rows, as far as a heartbeat needs them (the bucket in progress): of a node,
# and of a batch's nodes.
_PREVIOUS_COLUMNS = (
    LATEST.c.node_id,
    LATEST.c.gpu_index,
    LATEST.c.ecc_uncorrectable,
    LATEST.c.bucket_at,
    LATEST.c.bucket_samples,
    LATEST.c.bucket_utilization_sum,
    LATEST.c.bucket_utilization_max,
    LATEST.c.bucket_memory_used_sum,
    LATEST.c.bucket_memory_used_max,
    LATEST.c.bucket_temperature_sum,
    LATEST.c.bucket_temperature_max,
    LATEST.c.bucket_power_sum,
    LATEST.c.bucket_power_max,
)
_PREVIOUS = sa.select(*_PREVIOUS_COLUMNS).where(LATEST.c.node_id == sa.bindparam("node_id"))
_PREVIOUS_OF_NODES = sa.select(*_PREVIOUS_COLUMNS).where(
    LATEST.c.node_id.in_(sa.bindparam("node_ids", expanding=True))
)


@dataclass(frozen=True)
class _Statements:
    upsert: Any  # the GPUs' latest rows: one multi-row INSERT … ON CONFLICT DO UPDATE
    series: Any  # closed buckets: INSERT … ON CONFLICT DO NOTHING


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The heartbeat's writes for a dialect, built once (SQLite and PostgreSQL alike)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(LATEST)
    update: dict[str, Any] = {
        c.name: stmt.excluded[c.name]
        for c in LATEST.columns
        if c.name not in ("node_id", "gpu_index")
    }
    update["uuid"] = sa.func.coalesce(stmt.excluded.uuid, LATEST.c.uuid)  # sent with inventories
    upsert = stmt.on_conflict_do_update(index_elements=["node_id", "gpu_index"], set_=update)
    return _Statements(upsert=upsert, series=insert(SERIES).on_conflict_do_nothing())


def _series_row(p: Any) -> dict[str, Any]:
    """A closed bucket's series row from a latest row (ORM row or a ``_PREVIOUS`` result)."""
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
