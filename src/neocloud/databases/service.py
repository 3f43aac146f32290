"""Managed databases' use cases: create (or restore into a new database), list, read, delete,
back up on demand, list backups, and the CA certificate a client verifies the server with.

Module-level functions with keyword-only arguments, one transaction each, raising the kernel's
errors. They write desired state; ``steps.DatabaseSteps`` acts on it. Another org's database or
backup is not found (404), whoever asks. The generated password is returned by ``create`` only
(the router shows it once) and stored sealed with the platform's secret box.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.databases import host
from neocloud.databases.domain import (
    LIVE,
    MAX_ALLOWED_CIDRS,
    NAME_RE,
    PASSWORD_BYTES,
    PRESETS,
    RESERVED_NAMES,
    RESERVED_USERS,
    STORAGE_GIB_MAX,
    STORAGE_GIB_MIN,
    USER_RE,
    BackupState,
    DatabaseState,
    NodeRoom,
    place,
)
from neocloud.databases.lifecycle import move
from neocloud.databases.tables import (
    DatabaseBackupRow,
    DatabaseCaRow,
    DatabaseHostRow,
    DatabaseRow,
)
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, QuotaExceeded, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.kernel.secrets import SecretBox

SERVICE_ROLE = "service"
CA_ID = "default"


@dataclass(frozen=True, slots=True)
class DatabaseRequest:
    """A create request as the router validated its shape (bounds are checked again here)."""

    name: str
    version: str
    preset: str
    storage_gib: int
    user: str = "app"
    allowed_cidrs: tuple[str, ...] = ()
    restore_from: str | None = None


@dataclass(frozen=True, slots=True)
class Created:
    """A new database and its password (shown once, never stored in the clear)."""

    row: DatabaseRow
    password: str


def check_request(req: DatabaseRequest) -> list[str]:
    """The request's CIDRs normalized; 422 naming the field for anything out of bounds."""
    if not NAME_RE.match(req.name) or req.name in RESERVED_NAMES:
        raise ValidationFailed(
            f"name {req.name[:80]!r} must be 1 to 63 lowercase letters, digits or _, starting"
            f" with a letter, and not one of {', '.join(sorted(RESERVED_NAMES))}",
            code="invalid_name",
            param="name",
        )
    if not USER_RE.match(req.user) or req.user in RESERVED_USERS or req.user.startswith("pg_"):
        raise ValidationFailed(
            f"user {req.user[:80]!r} must be 1 to 63 lowercase letters, digits or _, starting"
            " with a letter, not postgres, public, neocloud or pg_*",
            code="invalid_user",
            param="user",
        )
    if req.preset not in PRESETS:
        raise ValidationFailed(
            f"unknown preset {req.preset[:40]!r}; presets: {', '.join(PRESETS)}",
            code="unknown_preset",
            param="preset",
            details={"valid": list(PRESETS)},
        )
    if not STORAGE_GIB_MIN <= req.storage_gib <= STORAGE_GIB_MAX:
        raise ValidationFailed(
            f"storage_gib must be {STORAGE_GIB_MIN} to {STORAGE_GIB_MAX}",
            code="invalid_storage",
            param="storage_gib",
        )
    if len(req.allowed_cidrs) > MAX_ALLOWED_CIDRS:
        raise ValidationFailed(f"at most {MAX_ALLOWED_CIDRS} allowed_cidrs", param="allowed_cidrs")
    cidrs = []
    for i, text in enumerate(req.allowed_cidrs):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValidationFailed(
                f"{text[:60]!r} is not an IP network (like 203.0.113.0/24 or 2001:db8::/48)",
                code="invalid_cidr",
                param=f"allowed_cidrs[{i}]",
            ) from None
        cidrs.append(str(net))
    return sorted(set(cidrs))


def available_versions(s: Session) -> list[str]:
    """The PostgreSQL major versions some usable service node has, in order."""
    rows = s.execute(
        sa.select(DatabaseHostRow.versions)
        .join(NodeRow, NodeRow.id == DatabaseHostRow.node_id)
        .where(NodeRow.role == SERVICE_ROLE, NodeRow.state == NodeState.AVAILABLE.value)
    ).scalars()
    found = {v for versions in rows for v in versions}
    return sorted(found, key=lambda v: int(v) if v.isdigit() else 0)


def offered_versions(*, db: Database) -> list[str]:
    """``available_versions`` in a transaction of its own."""
    with db.transaction() as s:
        return available_versions(s)


def create_database(
    *,
    db: Database,
    clock: Clock,
    box: SecretBox,
    actor: Principal,
    request: DatabaseRequest,
    max_per_org: int,
) -> Created:
    """Ask for a new database (role member or higher), placed now on a service node and port
    (so the connection string is known), ``provisioning`` until the worker has started its
    server there. ``restore_from``: a completed backup of one of the org's databases, restored
    into this new one (on the backup's node). 422 naming the field for bad input or a version
    no service node has; 404 for a backup not the org's; 409 for a name in use, a backup not
    completed, or no service node with room (``no_database_capacity``, with the reason); 403
    past the org's ``max_per_org`` live databases."""
    org_id = actor.org_id
    actor.require_org_role(org_id, Role.MEMBER)
    cidrs = check_request(request)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    now = clock.now()
    with db.transaction() as s:
        versions = available_versions(s)
        if request.version not in versions:
            raise ValidationFailed(
                f"PostgreSQL {request.version[:16]!r} is not offered; the service nodes have: "
                f"{', '.join(versions) or 'none (no service node offers PostgreSQL yet)'}",
                code="unknown_version",
                param="version",
                details={"valid": versions},
            )
        if request.restore_from is not None:
            backup_for_restore(s, org_id, request.restore_from)
        live = s.scalar(
            sa.select(sa.func.count())
            .select_from(DatabaseRow)
            .where(DatabaseRow.org_id == org_id, DatabaseRow.state.in_(LIVE))
        )
        if (live or 0) >= max_per_org:
            raise QuotaExceeded(
                f"the organization has {live} databases, its quota is {max_per_org}; delete"
                " one first",
                code="database_quota_exceeded",
                details={"limit": max_per_org, "count": live},
            )
        taken = s.scalar(
            sa.select(DatabaseRow.id).where(
                DatabaseRow.org_id == org_id,
                DatabaseRow.name == request.name,
                DatabaseRow.state.in_(LIVE),
            )
        )
        if taken is not None:
            raise Conflict(
                f"the organization has a database named {request.name!r} already ({taken})",
                code="database_name_taken",
                param="name",
            )
        row = DatabaseRow(
            id=new_id("db", at=now),
            org_id=org_id,
            project_id=None,
            name=request.name,
            version=request.version,
            preset=request.preset,
            storage_gib=request.storage_gib,
            db_user=request.user,
            allowed_cidrs=cidrs,
            state=DatabaseState.PROVISIONING.value,
            reason="waiting for a service node",
            sealed_password=box.seal({"password": password}),
            restore_from=request.restore_from,
            created_at=now,
            updated_at=now,
        )
        unplaced = place_database(s, row, now)
        if unplaced is not None:
            raise Conflict(
                f"no service node can run this database now: {unplaced}",
                code="no_database_capacity",
                details={"reason": unplaced},
            )
        s.add(row)
        s.flush()
        s.expunge(row)
    return Created(row, password)


def backup_for_restore(s: Session, org_id: str, backup_id: str) -> DatabaseBackupRow:
    backup = s.get(DatabaseBackupRow, backup_id)
    if backup is None or backup.org_id != org_id:
        raise NotFound(f"no backup {backup_id[:40]}", code="backup_not_found", param="restore_from")
    if backup.state != BackupState.COMPLETED.value:
        raise Conflict(
            f"backup {backup_id} is {backup.state}; only a completed backup can be restored",
            code="backup_not_completed",
            param="restore_from",
        )
    return backup


def list_databases(
    *, db: Database, actor: Principal, limit: int, after: str | None, deleted: bool = False
) -> Page[DatabaseRow]:
    """The caller's org's databases, oldest first (``deleted``: those too)."""
    with db.transaction() as s:
        stmt = sa.select(DatabaseRow).where(DatabaseRow.org_id == actor.org_id)
        if not deleted:
            stmt = stmt.where(DatabaseRow.state.in_(LIVE))
        return paginate(s, stmt, DatabaseRow.id, limit=limit, after=after)


def visible(s: Session, actor: Principal, database_id: str) -> DatabaseRow:
    row = s.get(DatabaseRow, database_id)
    if row is None or not (row.org_id == actor.org_id or actor.is_operator):
        raise NotFound(
            f"no database {database_id[:40]}", code="database_not_found", param="database_id"
        )
    return row


def get_database(*, db: Database, actor: Principal, database_id: str) -> DatabaseRow:
    with db.transaction() as s:
        row = visible(s, actor, database_id)
        s.expunge(row)
        return row


def delete_database(
    *, db: Database, clock: Clock, actor: Principal, database_id: str
) -> DatabaseRow:
    """Ask for the database to go (role member or higher): ``deleting`` until the worker has
    stopped its server and removed its data directory, backups and OS user. Asking again, or
    for a deleted database, answers it as it is."""
    with db.transaction() as s:
        row = visible(s, actor, database_id)
        actor.require_org_role(row.org_id, Role.MEMBER)
        if row.state not in (DatabaseState.DELETING.value, DatabaseState.DELETED.value):
            move(s, row, clock.now(), DatabaseState.DELETING, "deletion requested")
            row.lease_until = None
        s.flush()
        s.expunge(row)
        return row


def create_backup(
    *, db: Database, clock: Clock, actor: Principal, database_id: str, kind: str = "manual"
) -> DatabaseBackupRow:
    """Ask for a backup (``pg_dump``) of a running database now; 409 when it is not running."""
    now = clock.now()
    with db.transaction() as s:
        row = visible(s, actor, database_id)
        actor.require_org_role(row.org_id, Role.MEMBER)
        if row.state != DatabaseState.RUNNING.value:
            raise Conflict(
                f"database {row.id} is {row.state}; only a running database can be backed up",
                code="database_not_running",
                details={"state": row.state},
            )
        return add_backup(s, row, now, kind)


def add_backup(s: Session, row: DatabaseRow, now: datetime, kind: str) -> DatabaseBackupRow:
    backup = DatabaseBackupRow(
        id=new_id("dbbak", at=now),
        database_id=row.id,
        org_id=row.org_id,
        kind=kind,
        state=BackupState.PENDING.value,
        node_id=row.node_id,
        created_at=now,
    )
    s.add(backup)
    s.flush()
    s.expunge(backup)
    return backup


def list_backups(
    *, db: Database, actor: Principal, database_id: str, limit: int, after: str | None
) -> Page[DatabaseBackupRow]:
    """A database's backups, oldest first."""
    with db.transaction() as s:
        visible(s, actor, database_id)
        stmt = sa.select(DatabaseBackupRow).where(DatabaseBackupRow.database_id == database_id)
        return paginate(s, stmt, DatabaseBackupRow.id, limit=limit, after=after)


def ca_certificate(*, db: Database, actor: Principal, database_id: str) -> str:
    """The CA certificate (PEM) the database's server certificate chains to."""
    with db.transaction() as s:
        visible(s, actor, database_id)
        ca = s.get(DatabaseCaRow, CA_ID)
        if ca is None:
            raise Conflict(
                "the database's certificate is not issued yet (it is while it provisions)",
                code="certificate_not_issued",
            )
        return ca.cert_pem


def place_database(s: Session, row: DatabaseRow, now: datetime) -> str | None:
    """Choose ``row``'s service node and port (``domain.place``) and set its host address and
    OS user; answers None, or why no node fits (also kept as the row's reason)."""
    pinned = None
    if row.restore_from is not None:
        backup = s.get(DatabaseBackupRow, row.restore_from)
        pinned = backup.node_id if backup is not None else None
    nodes = list(
        s.scalars(
            sa.select(NodeRow).where(
                NodeRow.role == SERVICE_ROLE, NodeRow.state == NodeState.AVAILABLE.value
            )
        )
    )
    live = list(
        s.scalars(
            sa.select(DatabaseRow).where(
                DatabaseRow.state.in_(LIVE), DatabaseRow.node_id.is_not(None)
            )
        )
    )
    rooms = []
    for n in nodes:
        mine = [d for d in live if d.node_id == n.id]
        probed = s.get(DatabaseHostRow, n.id)
        rooms.append(
            NodeRoom(
                node_id=n.id,
                hostname=n.hostname,
                vcpus=n.vcpus,
                ram_gib=n.ram_gib,
                disk_gib=n.nvme_gib,
                used_vcpus=sum(PRESETS[d.preset].vcpus for d in mine),
                used_ram_gib=sum(PRESETS[d.preset].ram_gib for d in mine),
                used_disk_gib=sum(d.storage_gib for d in mine),
                versions=tuple(probed.versions) if probed else (),
                ports=frozenset(d.port for d in mine if d.port is not None),
            )
        )
    chosen = place(
        rooms,
        version=row.version,
        preset=PRESETS[row.preset],
        storage_gib=row.storage_gib,
        pinned=pinned,
    )
    if isinstance(chosen, str):
        if row.reason != chosen[:1000]:
            row.reason = chosen[:1000]
            row.updated_at = now
        return chosen
    room, port = chosen
    node = next(n for n in nodes if n.id == room.node_id)
    row.node_id = node.id
    row.port = port
    row.host = str((node.driver_config or {}).get("address") or node.hostname)
    row.os_user = host.os_user_for(row.id)
    row.reason = f"creating the server on {node.hostname} port {port}"
    row.updated_at = now
    return None
