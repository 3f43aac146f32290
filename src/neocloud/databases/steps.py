"""The databases worker: probes service nodes, places and creates servers, checks their health,
backs them up, deletes them (see docs/databases.md).

``DatabaseSteps.run_once`` (called by the compute worker's cycle, under its leader lease) is
cheap: in one transaction it reads what is due, claims it (``lease_until``) and starts each
step in a thread of its own, so a slow node never holds the cycle. A step reads what it needs,
acts on the node through its driver (``drivers.base.Executor``, the scripts of ``host.py``) and
applies the result in a new transaction, only while the database is still in the state it
acted for. Every script is safe to run twice, so a step cut short by a crash is simply run
again once its lease expires.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neocloud.compute.reconciler import node_ref
from neocloud.compute.tables import InstanceRow
from neocloud.databases import host
from neocloud.databases.domain import (
    LIVE,
    PRESETS,
    Action,
    BackupState,
    DatabaseState,
    decide,
)
from neocloud.databases.lifecycle import move
from neocloud.databases.service import CA_ID, SERVICE_ROLE, add_backup, place_database
from neocloud.databases.tables import (
    DatabaseBackupRow,
    DatabaseCaRow,
    DatabaseHostRow,
    DatabaseRow,
)
from neocloud.databases.tls import Pem, issue_server_cert, new_ca
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, Executor, NodeRef
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.secrets import SecretBox

log = logging.getLogger(__name__)
SIM_VERSIONS = ("15",)  # what a simulated service node offers (`make run`, the simulator)


@dataclass(frozen=True)
class DatabaseConfig:
    """Seconds unless named otherwise: how often a running server's health is checked and a
    service node's PostgreSQL versions probed; hours between scheduled backups (0: none);
    bounds of each script; how long a step holds its database (``lease_s``) and how soon a
    failed deletion is tried again."""

    health_interval_s: float = 30
    probe_interval_s: float = 300
    backup_interval_h: float = 24
    create_timeout_s: float = 300
    step_timeout_s: float = 120
    lease_s: float = 900
    retry_s: float = 30


def tail(text: str, limit: int = 400) -> str:
    flat = " ".join(text[-4000:].split())
    return flat if len(flat) <= limit else "…" + flat[-(limit - 1) :]


def spec_of(row: DatabaseRow) -> host.ServerSpec:
    preset = PRESETS[row.preset]
    return host.ServerSpec(
        database_id=row.id,
        os_user=row.os_user or host.os_user_for(row.id),
        version=row.version,
        port=row.port or 0,
        db_name=row.name,
        db_user=row.db_user,
        max_connections=preset.max_connections,
        shared_buffers_mib=preset.shared_buffers_mib,
    )


def tenant_cidrs(s: Session, row: DatabaseRow) -> list[str]:
    """Who may connect: the org's running instances' and cluster members' addresses (one host
    each) and the database's allow-list."""
    out = set(row.allowed_cidrs or [])
    accesses = s.scalars(
        sa.select(InstanceRow.access).where(
            InstanceRow.org_id == row.org_id, InstanceRow.state == "running"
        )
    )
    for access in accesses:
        if not access or access.get("simulated"):
            continue
        for address in [access.get("host"), *(access.get("addresses") or [])]:
            try:
                out.add(str(ipaddress.ip_network(str(address))))
            except ValueError:
                continue
    return sorted(out)


def ensure_ca(s: Session, box: SecretBox, now: datetime) -> Pem:
    """The platform's database CA, made (and its key sealed) on first use."""
    row = s.get(DatabaseCaRow, CA_ID)
    if row is None:
        ca = new_ca(common_name="neocloud managed databases CA", now=now)
        try:
            with s.begin_nested():  # two first creates side by side: one CA wins
                s.add(
                    DatabaseCaRow(
                        id=CA_ID,
                        cert_pem=ca.cert,
                        sealed_key=box.seal({"key": ca.key}),
                        created_at=now,
                    )
                )
            return ca
        except IntegrityError:
            row = s.get(DatabaseCaRow, CA_ID, populate_existing=True)
            assert row is not None  # the other writer's, committed
    return Pem(row.cert_pem, str(box.open(row.sealed_key)["key"]))


class DatabaseSteps:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        drivers: Drivers,
        box: SecretBox,
        config: DatabaseConfig | None = None,
    ) -> None:
        self.db, self.clock, self.drivers, self.box = db, clock, drivers, box
        self.config = config or DatabaseConfig()
        self.running: dict[str, threading.Thread] = {}

    def wait(self, timeout_s: float = 600) -> None:
        """Wait for the steps in flight (tests)."""
        for thread in list(self.running.values()):
            thread.join(timeout_s)

    def _start(self, key: str, step: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                step()
            except Exception:  # keep the worker alive; the lease lets a later cycle retry
                log.exception("database step %s failed", key)

        thread = threading.Thread(target=guarded, name=f"db-{key}", daemon=True)
        self.running[key] = thread
        thread.start()

    def run_once(self) -> int:
        """Start the steps due now; answer how many started."""
        self.running = {k: t for k, t in self.running.items() if t.is_alive()}
        now = self.clock.now()
        started: list[tuple[str, Callable[[], None]]] = []
        with self.db.transaction() as s:
            started += self._probes_due(s, now)
            self._schedule_backups(s, now)
            rows = s.scalars(sa.select(DatabaseRow).where(DatabaseRow.state.in_(LIVE)))
            for row in list(rows):
                if row.id in self.running or (row.lease_until and row.lease_until > now):
                    continue
                step = self._due(s, row, now)
                if step is not None:
                    row.lease_until = now + timedelta(seconds=self.config.lease_s)
                    started.append((row.id, step))
        for key, step in started:
            self._start(key, step)
        return len(started)

    # -- deciding -----------------------------------------------------------------------------

    def _probes_due(self, s: Session, now: datetime) -> list[tuple[str, Callable[[], None]]]:
        nodes = s.scalars(
            sa.select(NodeRow).where(
                NodeRow.role == SERVICE_ROLE, NodeRow.state == NodeState.AVAILABLE.value
            )
        )
        due: list[tuple[str, Callable[[], None]]] = []
        for node in nodes:
            seen = s.get(DatabaseHostRow, node.id)
            fresh = seen is not None and seen.probed_at > now - timedelta(
                seconds=self.config.probe_interval_s
            )
            key = f"probe-{node.id}"
            if not fresh and key not in self.running:
                ref = node_ref(node)
                due.append((key, functools.partial(self.probe, ref)))
        return due

    def _schedule_backups(self, s: Session, now: datetime) -> None:
        if self.config.backup_interval_h <= 0:
            return
        every = timedelta(hours=self.config.backup_interval_h)
        for row in s.scalars(
            sa.select(DatabaseRow).where(DatabaseRow.state == DatabaseState.RUNNING.value)
        ):
            last = row.last_backup_at or row.running_at
            if last is not None and last + every <= now:
                add_backup(s, row, now, "scheduled")
                row.last_backup_at = now  # the next one is due an interval from now

    def _due(self, s: Session, row: DatabaseRow, now: datetime) -> Callable[[], None] | None:
        pending = s.scalar(
            sa.select(DatabaseBackupRow.id)
            .where(
                DatabaseBackupRow.database_id == row.id,
                DatabaseBackupRow.state == BackupState.PENDING.value,
            )
            .order_by(DatabaseBackupRow.id)
            .limit(1)
        )
        health_due = (
            row.health_at is None
            or row.health_at + timedelta(seconds=self.config.health_interval_s) <= now
        )
        action = decide(
            DatabaseState(row.state),
            ever_ran=row.running_at is not None,
            backup_pending=pending is not None,
            health_due=health_due,
        )
        database_id = row.id
        if action is Action.DELETE:
            return lambda: self.delete(database_id)
        if action is Action.PLACE_AND_CREATE:
            if row.node_id is None and place_database(s, row, now) is not None:
                return None
            return lambda: self.create(database_id)
        if action is Action.BACKUP and pending is not None:
            return lambda: self.backup(database_id, pending)
        if action is Action.HEALTH:
            return lambda: self.health(database_id)
        return None

    # -- acting -------------------------------------------------------------------------------

    def _executor(self, ref: NodeRef) -> Executor | str:
        driver = self.drivers.for_node(ref)
        if not isinstance(driver, Executor):
            return f"node {ref.hostname}'s driver ({ref.driver}) cannot run commands"
        return driver

    def _run(
        self, ref: NodeRef, script: str, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]:
        ex = self._executor(ref)
        if isinstance(ex, str):
            return -1, ex
        return ex.run_root(ref, script, timeout_s=timeout_s, stdin=stdin)

    def _load(self, database_id: str) -> tuple[DatabaseRow, NodeRef] | None:
        with self.db.transaction() as s:
            row = s.get(DatabaseRow, database_id)
            node = s.get(NodeRow, row.node_id) if row and row.node_id else None
            if row is None or node is None:
                return None
            s.expunge(row)
            return row, node_ref(node)

    def probe(self, ref: NodeRef) -> None:
        status, out = self._run(ref, host.PROBE, self.config.step_timeout_s)
        versions = host.parse_probe(out) if status == 0 else []
        if status == 0 and ref.driver == "sim":
            versions = list(SIM_VERSIONS)  # a simulated node offers what the simulator runs
        reason = None if status == 0 else tail(out)
        now = self.clock.now()
        with self.db.transaction() as s:
            row = s.get(DatabaseHostRow, ref.id)
            if row is None:
                s.add(
                    DatabaseHostRow(node_id=ref.id, versions=versions, reason=reason, probed_at=now)
                )
            else:
                row.versions, row.reason, row.probed_at = versions, reason, now

    def create(self, database_id: str) -> None:
        started = time.monotonic()
        now = self.clock.now()
        with self.db.transaction() as s:
            row = s.get(DatabaseRow, database_id)
            node = s.get(NodeRow, row.node_id) if row and row.node_id else None
            if row is None or node is None:
                return
            ca = ensure_ca(s, self.box, now)
            ref = node_ref(node)
            spec = spec_of(row)
            cidrs = tenant_cidrs(s, row)
            address = row.host or node.hostname
            restore = None
            if row.restore_from is not None:
                backup = s.get(DatabaseBackupRow, row.restore_from)
                if backup is not None:
                    restore = host.backup_path(backup.database_id, backup.id)
            password = str(self.box.open(row.sealed_password)["password"])
        server = issue_server_cert(ca, host=address, common_name=database_id, now=now)
        script = host.create_script(
            spec, cert=server.cert, ca_cert=ca.cert, cidrs=cidrs, restore_from=restore
        )
        stdin = (host.scram_verifier(password) + "\n" + server.key).encode()
        del password
        status, out = self._run(ref, script, self.config.create_timeout_s, stdin=stdin)
        if status > 0:  # the node answered: nothing is left half-made (user, files, server)
            self._run(ref, host.delete_script(spec), self.config.step_timeout_s)
        took = time.monotonic() - started
        now = self.clock.now()
        with self.db.transaction() as s:
            row = s.get(DatabaseRow, database_id)
            if row is None:
                return
            row.lease_until = None
            if row.state != DatabaseState.PROVISIONING.value:
                return  # deleted meanwhile: the delete step removes what was made
            if status == 0:
                row.hba_cidrs = cidrs
                row.health, row.health_at = "ok", now
                said = f"accepting TLS connections on {address}:{spec.port}"
                if ref.driver == "sim":
                    said = "simulated node: no PostgreSQL server runs (the state is a real one's)"
                move(s, row, now, DatabaseState.RUNNING, f"{said}; created in {took:.1f} s")
            else:
                move(s, row, now, DatabaseState.FAILED, create_failure(ref, status, out))

    def health(self, database_id: str) -> None:
        loaded = self._load(database_id)
        if loaded is None:
            return
        row, ref = loaded
        spec = spec_of(row)
        status, out = self._run(ref, host.health_script(spec), self.config.step_timeout_s)
        hba_note = ""
        if status == 0:
            with self.db.transaction() as s:
                current = s.get(DatabaseRow, database_id)
                cidrs = tenant_cidrs(s, current) if current is not None else []
            if cidrs != (row.hba_cidrs or []):
                hs, hout = self._run(ref, host.hba_script(spec, cidrs), self.config.step_timeout_s)
                if hs == 0:
                    row.hba_cidrs = cidrs
                else:
                    hba_note = f"; updating pg_hba.conf failed: {tail(hout)}"
        now = self.clock.now()
        with self.db.transaction() as s:
            current = s.get(DatabaseRow, database_id)
            if current is None:
                return
            current.lease_until = None
            current.health_at = now
            if current.state not in (DatabaseState.RUNNING.value, DatabaseState.FAILED.value):
                return
            if status == 0:
                current.health = "ok"
                current.used_mib = (
                    int(out.split()[-1]) if out.split()[-1:] and out.split()[-1].isdigit() else None
                )
                current.hba_cidrs = row.hba_cidrs
                if current.state == DatabaseState.FAILED.value:
                    move(
                        s,
                        current,
                        now,
                        DatabaseState.RUNNING,
                        "the server answers again" + hba_note,
                    )
                elif hba_note:
                    current.reason = hba_note[2:][:1000]
            else:
                current.health = "failing"
                if current.state == DatabaseState.RUNNING.value:
                    why = {
                        host.NOT_RUNNING: "the server is not running",
                        host.NOT_READY: "the server does not accept connections",
                    }.get(status, "the health check could not run")
                    move(
                        s,
                        current,
                        now,
                        DatabaseState.FAILED,
                        f"health check on service node {ref.hostname}: {why}: {tail(out)}",
                    )

    def backup(self, database_id: str, backup_id: str) -> None:
        loaded = self._load(database_id)
        status, out = -1, "the database has no node"
        if loaded is not None:
            row, ref = loaded
            status, out = self._run(
                ref, host.backup_script(spec_of(row), backup_id), self.config.create_timeout_s
            )
            if status == 0 and ref.driver == "sim":
                out = "0"  # simulated: nothing was dumped
        now = self.clock.now()
        with self.db.transaction() as s:
            current = s.get(DatabaseRow, database_id)
            if current is not None:
                current.lease_until = None
            backup = s.get(DatabaseBackupRow, backup_id)
            if backup is None:
                return
            backup.completed_at = now
            words = out.split()
            if status == 0 and words and words[-1].isdigit():
                backup.state = BackupState.COMPLETED.value
                backup.size_bytes = int(words[-1])
                if current is not None:
                    current.last_backup_at = now
            else:
                backup.state = BackupState.FAILED.value
                backup.reason = f"pg_dump failed (exit {status}): {tail(out)}"[:1000]

    def delete(self, database_id: str) -> None:
        loaded = self._load(database_id)
        status, out = 0, ""
        if loaded is not None:
            row, ref = loaded
            status, out = self._run(
                ref, host.delete_script(spec_of(row)), self.config.step_timeout_s
            )
        now = self.clock.now()
        with self.db.transaction() as s:
            row2 = s.get(DatabaseRow, database_id)
            if row2 is None or row2.state != DatabaseState.DELETING.value:
                return
            if status == 0:
                row2.lease_until = None
                move(
                    s,
                    row2,
                    now,
                    DatabaseState.DELETED,
                    "server stopped; data directory, backups and OS user removed"
                    if loaded is not None
                    else "no server had been created",
                )
                s.execute(
                    sa.update(DatabaseBackupRow)
                    .where(DatabaseBackupRow.database_id == database_id)
                    .values(state=BackupState.DELETED.value)
                )
            else:
                row2.lease_until = now + timedelta(seconds=self.config.retry_s)
                row2.reason = f"deleting failed, retrying: {tail(out)}"[:1000]
                row2.updated_at = now


def create_failure(ref: NodeRef, status: int, out: str) -> str:
    """Why creating a server failed, naming the service node."""
    reasons = {
        host.NOT_INSTALLED: "PostgreSQL is not installed",
        host.USER_FAILED: "creating its OS user or directories failed",
        host.INITDB_FAILED: "initdb failed",
        host.START_FAILED: "the server did not start",
        host.ROLE_FAILED: "creating the role and database failed",
        host.RESTORE_FAILED: "restoring the backup failed",
    }
    why = reasons.get(status, f"the create step failed (exit {status})")
    return f"service node {ref.hostname}: {why}: {tail(out)}"
