"""The storage reconciler: pools joined, volumes created, grown and deleted, filesystems mounted
on every live member of what they are attached to, through the nodes' drivers.

Each worker cycle ``StorageSteps.run_once`` reads which pools and filesystems need a step (a
cheap read) and runs each step in its own thread, so a slow node never holds the worker; a
lease on the row (``lease_until``) keeps two workers from running one step at once, and is also
the back-off after a failed step (``retry_s``). Every script is safe to run twice.

``glusterfs`` pools: ``glusterd`` ensured on every node and the nodes joined (``gluster peer
probe``, by their drivers' addresses); a filesystem is one replicated volume (bricks under the
pool's ``brick_root`` on each node, ``force`` as bricks may share the root disk), its size
enforced with Gluster's quota, clients allowed from the pool's nodes and the attached members
only (``auth.allow``). A member mounts it with the FUSE client, through the storage nodes that
answer (the first one primary, the others ``backup-volfile-servers``); a storage node down is
named in the mount's reason and the attachment is ``degraded``; none answering fails the mount
with each node's reason. A member that joins later (a healed or added cluster member) is
mounted at the next cycle; one that leaves is forgotten (its driver's deprovision unmounts what
is listed under ``/var/lib/neocloud/mounts``).

``local`` pools: a directory per filesystem under ``<data_dir>/filesystems`` (``make run``,
the simulator); simulated members get a simulated mount (``simulated: true``). Storage nodes or
members on the ``sim`` driver run nothing and say so.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.domain import InstanceState
from neocloud.compute.reconciler import node_ref
from neocloud.compute.tables import InstanceRow
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, Executor, NodeRef
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock
from neocloud.storage import gluster as g
from neocloud.storage.domain import (
    LIVE_ATTACH,
    AttachState,
    Backend,
    FsState,
    MountState,
    PoolState,
)
from neocloud.storage.tables import (
    FilesystemRow,
    FsAttachmentRow,
    FsMountRow,
    FsSizeIntervalRow,
    StoragePoolRow,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class StorageTimeouts:
    """Seconds: joining a pool's nodes, one volume script, one mount, probing a storage node;
    how often used bytes are measured; the back-off after a failed step; a step's lease."""

    setup_s: float = 90
    volume_s: float = 120
    mount_s: float = 90
    probe_s: float = 20
    usage_every_s: float = 60
    retry_s: float = 30
    lease_s: float = 600


@dataclass(frozen=True)
class StorageNode:
    id: str
    hostname: str
    address: str
    ref: NodeRef

    @property
    def simulated(self) -> bool:
        return self.ref.driver == "sim"

    def name(self) -> str:
        return f"{self.hostname} ({self.id})"


@dataclass(frozen=True)
class Member:
    instance_id: str
    node_id: str
    address: str
    simulated: bool
    ref: NodeRef


@dataclass
class MountResult:
    state: MountState
    reason: str | None
    simulated: bool = False


@dataclass
class Plan:
    """What one filesystem's step works from, read in one transaction."""

    fs: FilesystemRow
    pool: StoragePoolRow
    nodes: list[StorageNode]
    attachments: list[FsAttachmentRow]
    mounts: dict[str, dict[str, FsMountRow]]  # attachment id -> instance id -> mount
    members: dict[str, list[Member]]  # attachment id -> live members now
    ended: dict[str, str] = field(default_factory=dict)  # attachment id -> why it ends


def side_by_side(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` in parallel threads (``fn`` must not raise)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


class StorageSteps:
    """The worker's storage step (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        drivers: Drivers,
        *,
        data_dir: Path | None = None,
        timeouts: StorageTimeouts | None = None,
    ) -> None:
        self.db, self.clock, self.drivers = db, clock, drivers
        self.data_dir = data_dir
        self.timeouts = timeouts or StorageTimeouts()
        self.running: dict[str, threading.Thread] = {}

    def wait(self, timeout_s: float = 600) -> None:
        """Wait for the steps in flight (tests, bench)."""
        for thread in list(self.running.values()):
            thread.join(timeout_s)

    # -- the cycle ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Start the steps due now; answer how many started."""
        self.running = {k: t for k, t in self.running.items() if t.is_alive()}
        now = self.clock.now()
        started: list[tuple[str, Callable[[str], None]]] = []
        lease = timedelta(seconds=self.timeouts.lease_s)
        with self.db.transaction() as s:
            for pool in s.scalars(
                sa.select(StoragePoolRow).where(StoragePoolRow.state == PoolState.CREATING.value)
            ):
                if pool.id in self.running or _leased(pool.lease_until, now):
                    continue
                pool.lease_until = now + lease
                started.append((pool.id, self.setup_pool))
            for fs in s.scalars(
                sa.select(FilesystemRow).where(FilesystemRow.state != FsState.DELETED.value)
            ):
                if fs.id in self.running or _leased(fs.lease_until, now):
                    continue
                if self._due(s, fs, now):
                    fs.lease_until = now + lease
                    started.append((fs.id, self.sync))
        for key, step in started:
            thread = threading.Thread(
                target=self._guarded, args=(step, key), name="storage", daemon=True
            )
            self.running[key] = thread
            thread.start()
        return len(started)

    def _guarded(self, step: Callable[[str], None], key: str) -> None:
        try:
            step(key)
        except Exception:  # keep the worker alive; the lease lets a later cycle retry
            log.exception("storage step on %s failed", key)

    def _due(self, s: Session, fs: FilesystemRow, now: datetime) -> bool:
        pool = s.get(StoragePoolRow, fs.pool_id)
        if pool is None:
            return False
        if fs.state == FsState.CREATING.value:
            if pool.state == PoolState.FAILED.value:
                fs.state = FsState.FAILED.value
                fs.reason = f"storage pool {pool.name} failed: {pool.reason or ''}"[:1000]
                fs.updated_at = now
                unbill(s, fs.id)
                return False
            return pool.state == PoolState.READY.value
        if fs.state == FsState.DELETING.value:
            return True
        if fs.state != FsState.AVAILABLE.value:
            return False
        if fs.size_gib != fs.applied_gib:
            return True
        if fs.used_at is None or (now - fs.used_at).total_seconds() >= self.timeouts.usage_every_s:
            return True
        atts = _attachments(s, fs.id)
        if not atts:
            return False
        mounts = _mounts(s, [a.id for a in atts])
        for a in atts:
            if a.state == AttachState.DETACHING.value or _ended(s, a) is not None:
                return True
            want = {m.instance_id for m in _members(s, a)}
            have = mounts.get(a.id, {})
            if want != set(have):
                return True
            for m in have.values():
                if m.state == MountState.FAILED.value:
                    return True  # retried once the back-off (the lease) has passed
        return False

    # -- pools --------------------------------------------------------------------------------

    def setup_pool(self, pool_id: str) -> None:
        with self.db.transaction() as s:
            pool = s.get(StoragePoolRow, pool_id)
            if pool is None or pool.state != PoolState.CREATING.value:
                return
            nodes = _storage_nodes(s, pool)
            bricks = pool.brick_root
        if all(n.simulated for n in nodes):
            self._finish_pool(pool_id, PoolState.READY, "simulated nodes: no glusterd runs")
            return
        missing = [n.name() for n in nodes if not n.address]
        if missing:
            self._finish_pool(
                pool_id, PoolState.FAILED, f"no address to reach {', '.join(missing)}"
            )
            return
        results = side_by_side(
            lambda n: self._run(n.ref, g.script(g.ENSURE_GLUSTERD, BRICKS=bricks), "setup"), nodes
        )
        bad = [
            f"{n.name()}: {g.explain(rc, out)}"
            for n, (rc, out) in zip(nodes, results, strict=True)
            if rc != 0
        ]
        if bad:
            self._finish_pool(pool_id, PoolState.FAILED, "; ".join(bad))
            return
        peers = " ".join(n.address for n in nodes[1:])
        if peers:
            rc, out = self._run(nodes[0].ref, g.script(g.PROBE_PEERS, PEERS=peers), "setup")
            if rc != 0:
                self._finish_pool(
                    pool_id, PoolState.FAILED, f"{nodes[0].name()}: {g.explain(rc, out)}"
                )
                return
        self._finish_pool(
            pool_id, PoolState.READY, f"{len(nodes)} nodes joined, glusterd running on each"
        )

    def _finish_pool(self, pool_id: str, state: PoolState, reason: str) -> None:
        with self.db.transaction() as s:
            pool = s.get(StoragePoolRow, pool_id)
            if pool is None:
                return
            pool.state = state.value
            pool.reason = reason[:1000]
            pool.lease_until = None
            pool.updated_at = self.clock.now()

    # -- filesystems --------------------------------------------------------------------------

    def sync(self, fs_id: str) -> None:
        """Everything one filesystem needs now: create, grow, mount and unmount, measure,
        delete; the row's lease is released at the end (or kept as a back-off on failure)."""
        plan = self._plan(fs_id)
        if plan is None:
            return
        retry = False
        try:
            if plan.fs.state == FsState.CREATING.value:
                retry = not self._create(plan)
            elif plan.fs.state == FsState.DELETING.value:
                retry = not self._delete(plan)
            if plan.fs.state == FsState.AVAILABLE.value:
                if plan.fs.size_gib != plan.fs.applied_gib:
                    retry = not self._grow(plan) or retry
                retry = not self._attachments(plan) or retry
                self._measure(plan)
        finally:
            self._release(fs_id, retry)

    def _plan(self, fs_id: str) -> Plan | None:
        with self.db.transaction() as s:
            fs = s.get(FilesystemRow, fs_id)
            if fs is None or fs.state == FsState.DELETED.value:
                return None
            pool = s.get(StoragePoolRow, fs.pool_id)
            if pool is None:
                return None
            atts = _attachments(s, fs.id)
            plan = Plan(
                fs, pool, _storage_nodes(s, pool), atts, _mounts(s, [a.id for a in atts]), {}
            )
            for a in atts:
                plan.members[a.id] = _members(s, a)
                why = _ended(s, a)
                if why is not None:
                    plan.ended[a.id] = why
            s.expunge_all()
        return plan

    def _release(self, fs_id: str, retry: bool) -> None:
        with self.db.transaction() as s:
            fs = s.get(FilesystemRow, fs_id)
            if fs is not None:
                now = self.clock.now()
                fs.lease_until = now + timedelta(seconds=self.timeouts.retry_s) if retry else None

    def _set_fs(self, fs_id: str, **values: object) -> None:
        with self.db.transaction() as s:
            fs = s.get(FilesystemRow, fs_id)
            if fs is None:
                return
            for k, v in values.items():
                setattr(fs, k, v)
            fs.updated_at = self.clock.now()
            if values.get("state") == FsState.FAILED.value:
                unbill(s, fs_id)

    def _local_dir(self, fs: FilesystemRow) -> Path | None:
        return None if self.data_dir is None else self.data_dir / "filesystems" / fs.id

    def _create(self, plan: Plan) -> bool:
        fs, pool = plan.fs, plan.pool
        if pool.backend == Backend.LOCAL.value:
            where = self._local_dir(fs)
            if where is not None:
                where.mkdir(parents=True, exist_ok=True)
            reason = f"a directory under {where}" if where else "simulated (no data dir)"
            self._set_fs(
                fs.id, state=FsState.AVAILABLE.value, applied_gib=fs.size_gib, reason=reason
            )
            fs.state, fs.applied_gib = FsState.AVAILABLE.value, fs.size_gib
            return True
        if all(n.simulated for n in plan.nodes):
            self._set_fs(
                fs.id,
                state=FsState.AVAILABLE.value,
                applied_gib=fs.size_gib,
                reason="simulated storage nodes: no volume exists",
            )
            fs.state, fs.applied_gib = FsState.AVAILABLE.value, fs.size_gib
            return True
        bricks = [f"{n.address}:{pool.brick_root}/{fs.volume}/brick" for n in plan.nodes]
        prep = side_by_side(
            lambda n: self._run(
                n.ref,
                g.script(g.ENSURE_GLUSTERD, BRICKS=f"{pool.brick_root}/{fs.volume}"),
                "volume",
            ),
            plan.nodes,
        )
        bad = [
            f"{n.name()}: {g.explain(rc, out)}"
            for n, (rc, out) in zip(plan.nodes, prep, strict=True)
            if rc != 0
        ]
        if bad:
            self._set_fs(fs.id, reason=f"creating the volume waits: {'; '.join(bad)}"[:1000])
            return False
        rc, out = self._run(
            plan.nodes[0].ref,
            g.script(
                g.CREATE_VOLUME,
                V=fs.volume,
                REPLICA=pool.replica,
                BRICKLIST=" ".join(bricks),
                GB=fs.size_gib,
                ALLOW=_allow(plan.nodes, []),
            ),
            "volume",
        )
        if rc != 0:
            self._set_fs(
                fs.id,
                state=FsState.FAILED.value,
                reason=f"{plan.nodes[0].name()}: {g.explain(rc, out)}"[:1000],
            )
            return True
        self._set_fs(
            fs.id,
            state=FsState.AVAILABLE.value,
            applied_gib=fs.size_gib,
            reason=f"volume {fs.volume}: replica {pool.replica} on {len(plan.nodes)} nodes",
        )
        fs.state, fs.applied_gib = FsState.AVAILABLE.value, fs.size_gib
        return True

    def _grow(self, plan: Plan) -> bool:
        fs = plan.fs
        if plan.pool.backend == Backend.LOCAL.value or all(n.simulated for n in plan.nodes):
            self._set_fs(fs.id, applied_gib=fs.size_gib)
            return True
        errors = []
        for n in plan.nodes:  # any node of the pool sets it for the whole volume
            rc, out = self._run(n.ref, g.script(g.SET_LIMIT, V=fs.volume, GB=fs.size_gib), "volume")
            if rc == 0:
                self._set_fs(fs.id, applied_gib=fs.size_gib)
                return True
            errors.append(f"{n.name()}: {g.explain(rc, out)}")
        self._set_fs(
            fs.id, reason=f"growing to {fs.size_gib} GiB waits: {'; '.join(errors)}"[:1000]
        )
        return False

    def _measure(self, plan: Plan) -> None:
        fs = plan.fs
        now = self.clock.now()
        if plan.pool.backend == Backend.LOCAL.value:
            where = self._local_dir(fs)
            used = _du(where) if where is not None else 0
            self._set_fs(fs.id, used_bytes=used, used_at=now)
            return
        if all(n.simulated for n in plan.nodes):
            self._set_fs(fs.id, used_bytes=0, used_at=now)
            return
        for n in plan.nodes:
            rc, out = self._run(n.ref, g.script(g.USAGE, V=fs.volume), "probe")
            measured = g.parse_used(out) if rc == 0 else None
            if measured is not None:
                self._set_fs(fs.id, used_bytes=measured, used_at=now)
                return
        self._set_fs(fs.id, used_at=now)  # unknown now; tried again after usage_every_s

    def _delete(self, plan: Plan) -> bool:
        fs = plan.fs
        if plan.pool.backend == Backend.LOCAL.value:
            where = self._local_dir(fs)
            if where is not None and where.exists():
                shutil.rmtree(where)
        elif not all(n.simulated for n in plan.nodes):
            rc, out = self._run(plan.nodes[0].ref, g.script(g.DELETE_VOLUME, V=fs.volume), "volume")
            if rc != 0:
                self._set_fs(
                    fs.id,
                    reason=f"deleting waits: {plan.nodes[0].name()}: {g.explain(rc, out)}"[:1000],
                )
                return False
            res = side_by_side(
                lambda n: self._run(
                    n.ref,
                    g.script(g.REMOVE_BRICK, DIR=f"{plan.pool.brick_root}/{fs.volume}"),
                    "volume",
                ),
                plan.nodes,
            )
            bad = [
                f"{n.name()}: {g.explain(rc, out)}"
                for n, (rc, out) in zip(plan.nodes, res, strict=True)
                if rc != 0
            ]
            if bad:
                self._set_fs(fs.id, reason=f"removing the bricks waits: {'; '.join(bad)}"[:1000])
                return False
        now = self.clock.now()
        self._set_fs(fs.id, state=FsState.DELETED.value, reason="deleted", deleted_at=now)
        fs.state = FsState.DELETED.value
        return True

    # -- attachments --------------------------------------------------------------------------

    def _attachments(self, plan: Plan) -> bool:
        """Mount where members lack it, unmount what is detaching; answer False when some
        step failed (the filesystem's step is retried after the back-off)."""
        ok = True
        serving: tuple[list[StorageNode], list[str]] | None = None
        needed = [
            (a, m)
            for a in plan.attachments
            if a.state != AttachState.DETACHING.value and a.id not in plan.ended
            for m in plan.members[a.id]
            if (cur := plan.mounts.get(a.id, {}).get(m.instance_id)) is None
            or cur.state == MountState.FAILED.value
        ]
        results: dict[tuple[str, str], MountResult] = {}
        if needed:
            serving = self._serving(plan)
            if any(not m.simulated for _, m in needed):
                self._allow(plan, serving[0])
            outcomes = side_by_side(lambda am: self._mount(plan, am[0], am[1], serving), needed)
            for (a, m), res in zip(needed, outcomes, strict=True):
                results[(a.id, m.instance_id)] = res
                ok = ok and res.state is MountState.MOUNTED
        # Detaching: unmount from every member that has it.
        unmounted: dict[str, list[tuple[str, str | None]]] = {}
        for a in plan.attachments:
            if a.state != AttachState.DETACHING.value and a.id not in plan.ended:
                continue
            live = {m.instance_id: m for m in plan.members[a.id]}
            targets = [
                (row, live.get(row.instance_id))
                for row in plan.mounts.get(a.id, {}).values()
                if row.state == MountState.MOUNTED.value
            ]
            outs = side_by_side(partial(self._unmount_pair, a), targets)
            unmounted[a.id] = [
                (row.instance_id, err) for (row, _), err in zip(targets, outs, strict=True)
            ]
            ok = ok and all(err is None for _, err in unmounted[a.id])
        self._apply_mounts(plan, results, unmounted)
        return ok

    def _serving(self, plan: Plan) -> tuple[list[StorageNode], list[str]]:
        """The pool's nodes that serve the volume now, and what is wrong with the others."""
        if plan.pool.backend == Backend.LOCAL.value or all(n.simulated for n in plan.nodes):
            return list(plan.nodes), []
        res = side_by_side(
            lambda n: self._run(n.ref, g.script(g.VOLUME_STATUS, V=plan.fs.volume), "probe"),
            plan.nodes,
        )
        up, down = [], []
        for n, (rc, out) in zip(plan.nodes, res, strict=True):
            if rc == 0:
                up.append(n)
            else:
                down.append(f"storage node {n.name()} down: {g.explain(rc, out, 200)}")
        return up, down

    def _allow(self, plan: Plan, up: list[StorageNode]) -> None:
        members = [m for ms in plan.members.values() for m in ms if not m.simulated]
        for n in up:
            rc, _ = self._run(
                n.ref,
                g.script(g.SET_ALLOW, V=plan.fs.volume, ALLOW=_allow(plan.nodes, members)),
                "probe",
            )
            if rc == 0:
                return

    def _mount(
        self,
        plan: Plan,
        att: FsAttachmentRow,
        member: Member,
        serving: tuple[list[StorageNode], list[str]] | None,
    ) -> MountResult:
        local = plan.pool.backend == Backend.LOCAL.value
        if member.simulated:
            return MountResult(MountState.MOUNTED, "simulated member: nothing mounted", True)
        if local:
            return MountResult(
                MountState.FAILED,
                f"member {member.instance_id}: a local pool's filesystems mount on simulated"
                " members only",
            )
        if all(n.simulated for n in plan.nodes):
            return MountResult(
                MountState.FAILED,
                f"member {member.instance_id}: the pool's storage nodes are simulated; a real"
                " member cannot mount it",
            )
        up, down = serving if serving is not None else ([], [])
        if not up:
            return MountResult(
                MountState.FAILED,
                f"member {member.instance_id}: no storage node of pool {plan.pool.name} serves"
                f" volume {plan.fs.volume}: {'; '.join(down)}"[:1000],
            )
        rc, out = self._run(
            member.ref,
            g.script(
                g.MOUNT,
                MP=att.mount_path,
                SERVERS=" ".join(n.address for n in up),
                V=plan.fs.volume,
                RO=int(att.read_only),
                W=member.instance_id,
            ),
            "mount",
        )
        if rc != 0:
            return MountResult(
                MountState.FAILED,
                f"member {member.instance_id} (node {member.ref.hostname}): {g.explain(rc, out)}"
                + (f"; {'; '.join(down)}" if down else ""),
            )
        if down:
            return MountResult(
                MountState.MOUNTED, f"degraded: {'; '.join(down)}; served by the others"[:1000]
            )
        return MountResult(MountState.MOUNTED, None)

    def _unmount_pair(
        self, att: FsAttachmentRow, pair: tuple[FsMountRow, Member | None]
    ) -> str | None:
        return self._unmount(att, pair[0], pair[1])

    def _unmount(self, att: FsAttachmentRow, row: FsMountRow, member: Member | None) -> str | None:
        """None when unmounted (or nothing is there to unmount), else why not."""
        if row.simulated or member is None:
            return None  # a simulated mount, or the member left (its deprovision unmounted)
        rc, out = self._run(
            member.ref,
            g.script(g.UNMOUNT, MP=att.mount_path, W=member.instance_id),
            "mount",
        )
        if rc != 0:
            return f"member {member.instance_id}: {g.explain(rc, out)}"
        return None

    def _apply_mounts(
        self,
        plan: Plan,
        results: dict[tuple[str, str], MountResult],
        unmounted: dict[str, list[tuple[str, str | None]]],
    ) -> None:
        now = self.clock.now()
        with self.db.transaction() as s:
            for a0 in plan.attachments:
                a = s.get(FsAttachmentRow, a0.id)
                if a is None:
                    continue
                rows = {
                    r.instance_id: r
                    for r in s.scalars(
                        sa.select(FsMountRow).where(FsMountRow.attachment_id == a.id)
                    )
                }
                members = {m.instance_id: m for m in plan.members[a.id]}
                for (att_id, inst_id), res in results.items():
                    if att_id != a.id:
                        continue
                    row = rows.get(inst_id)
                    if row is None:
                        row = FsMountRow(
                            attachment_id=a.id,
                            instance_id=inst_id,
                            node_id=members[inst_id].node_id,
                            updated_at=now,
                        )
                        s.add(row)
                        rows[inst_id] = row
                    row.state = res.state.value
                    row.reason = None if res.reason is None else res.reason[:1000]
                    row.simulated = res.simulated
                    row.updated_at = now
                    if res.state is MountState.MOUNTED:
                        row.mounted_at = now
                ending = a.id in plan.ended or a.state == AttachState.DETACHING.value
                if ending:
                    errors = [err for _, err in unmounted.get(a.id, []) if err is not None]
                    if errors:
                        a.reason = f"unmounting waits: {'; '.join(errors)}"[:1000]
                        a.updated_at = now
                        continue
                    for row in rows.values():
                        s.delete(row)
                    a.state = AttachState.DETACHED.value
                    a.reason = plan.ended.get(a.id, "detached")
                    a.detached_at = now
                    a.updated_at = now
                    continue
                # Members that left (ended, or left the cluster): forgotten.
                for inst_id, row in list(rows.items()):
                    if inst_id not in members:
                        s.delete(row)
                        del rows[inst_id]
                state, reason = _attachment_state(members, rows)
                a.state, a.reason, a.updated_at = state.value, reason, now

    # -- helpers ------------------------------------------------------------------------------

    def _run(self, ref: NodeRef, script: str, kind: str) -> tuple[int, str]:
        timeout = {
            "setup": self.timeouts.setup_s,
            "volume": self.timeouts.volume_s,
            "mount": self.timeouts.mount_s,
            "probe": self.timeouts.probe_s,
        }[kind]
        try:
            driver = self.drivers.for_node(ref)
        except LookupError as exc:
            return -1, str(exc)
        if not isinstance(driver, Executor):
            return -1, f"node {ref.hostname}: its driver ({ref.driver}) cannot run commands"
        try:
            return driver.run_root(ref, script, timeout_s=timeout)
        except Exception as exc:  # a driver's bug: a failed step, never a dead worker
            return -1, f"node {ref.hostname}: driver error: {type(exc).__name__}"


def unbill(s: Session, fs_id: str) -> None:
    """A filesystem that failed before it was ever available is not billed: its size
    intervals go."""
    s.execute(
        sa.delete(FsSizeIntervalRow)
        .where(FsSizeIntervalRow.filesystem_id == fs_id)
        .execution_options(synchronize_session=False)
    )


def _leased(until: datetime | None, now: datetime) -> bool:
    return until is not None and until > now


def _allow(nodes: Sequence[StorageNode], members: Sequence[Member]) -> str:
    addresses = [n.address for n in nodes if n.address] + [m.address for m in members if m.address]
    return ",".join(dict.fromkeys(addresses)) or "127.0.0.1"


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _attachments(s: Session, fs_id: str) -> list[FsAttachmentRow]:
    return list(
        s.scalars(
            sa.select(FsAttachmentRow)
            .where(
                FsAttachmentRow.filesystem_id == fs_id,
                FsAttachmentRow.state.in_(
                    [x.value for x in LIVE_ATTACH] + [AttachState.DETACHING.value]
                ),
            )
            .order_by(FsAttachmentRow.id)
        )
    )


def _mounts(s: Session, att_ids: list[str]) -> dict[str, dict[str, FsMountRow]]:
    out: dict[str, dict[str, FsMountRow]] = {a: {} for a in att_ids}
    if att_ids:
        for m in s.scalars(sa.select(FsMountRow).where(FsMountRow.attachment_id.in_(att_ids))):
            out[m.attachment_id][m.instance_id] = m
    return out


def _members(s: Session, att: FsAttachmentRow) -> list[Member]:
    """The attachment's members that run on a node now, in id order."""
    stmt = sa.select(InstanceRow).where(
        InstanceRow.state == InstanceState.RUNNING.value, InstanceRow.node_id.is_not(None)
    )
    if att.instance_id is not None:
        stmt = stmt.where(InstanceRow.id == att.instance_id)
    else:
        stmt = stmt.where(InstanceRow.cluster_id == att.cluster_id)
    rows = list(s.scalars(stmt.order_by(InstanceRow.id)))
    nodes = {
        n.id: n
        for n in s.scalars(sa.select(NodeRow).where(NodeRow.id.in_({r.node_id for r in rows})))
    }
    out = []
    for r in rows:
        node = nodes.get(r.node_id or "")
        if node is None:
            continue
        access = r.access or {}
        out.append(
            Member(
                instance_id=r.id,
                node_id=node.id,
                address=str(access.get("host") or ""),
                simulated=bool(access.get("simulated", False)),
                ref=node_ref(node),
            )
        )
    return out


def _ended(s: Session, att: FsAttachmentRow) -> str | None:
    """Why an attachment ends on its own: its instance or cluster ended."""
    from neocloud.compute.domain import CLUSTER_FINAL, INSTANCE_FINAL, ClusterState
    from neocloud.compute.tables import ClusterRow

    if att.instance_id is not None:
        inst = s.get(InstanceRow, att.instance_id)
        if inst is None or InstanceState(inst.state) in INSTANCE_FINAL:
            return f"the instance ended ({inst.state if inst else 'gone'})"
        return None
    clu = s.get(ClusterRow, att.cluster_id)
    if clu is None or ClusterState(clu.state) in CLUSTER_FINAL:
        return f"the cluster ended ({clu.state if clu else 'gone'})"
    return None


def _storage_nodes(s: Session, pool: StoragePoolRow) -> list[StorageNode]:
    nodes = {n.id: n for n in s.scalars(sa.select(NodeRow).where(NodeRow.id.in_(pool.node_ids)))}
    out = []
    for node_id in pool.node_ids:
        n = nodes.get(node_id)
        if n is None:
            continue
        ref = node_ref(n)
        out.append(StorageNode(n.id, n.hostname, str(ref.config.get("address") or ""), ref))
    return out


def _attachment_state(
    members: dict[str, Member], rows: dict[str, FsMountRow]
) -> tuple[AttachState, str | None]:
    if not members:
        return AttachState.ATTACHING, "waiting for a member to run"
    failed = [r for r in rows.values() if r.state == MountState.FAILED.value]
    if failed:
        return AttachState.FAILED, "; ".join(r.reason or r.instance_id for r in failed)[:1000]
    missing = [i for i in members if i not in rows]
    if missing:
        return AttachState.ATTACHING, f"mounting on {', '.join(missing)}"
    degraded = [r.reason for r in rows.values() if r.reason and r.reason.startswith("degraded")]
    if degraded:
        return AttachState.DEGRADED, degraded[0]
    sim = all(r.simulated for r in rows.values())
    return AttachState.ATTACHED, (
        f"mounted on {len(rows)} members" + (" (simulated)" if sim else "")
    )
